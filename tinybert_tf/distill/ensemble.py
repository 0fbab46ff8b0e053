"""Several teachers as one: their soft targets combined once (Hinton et al. 2015; MT-DNN).

`combine_logits` turns K teachers' logits into one logits array whose tempered softmax is the
ensemble's soft target, so everything downstream (cached logits, the `pred` term) is unchanged:

* `prob` (default): the mean of the teachers' tempered probabilities,
  p = mean_k softmax(z_k / T); returned as T * log(p), since softmax(T * log(p) / T) = p;
* `logit`: the mean of the logits, whose tempered softmax is softmax(mean_k z_k / T);
* regression heads: the mean prediction.
"""

from __future__ import annotations

import numpy as np

COMBINES = ("prob", "logit")
_TINY = np.finfo(np.float32).tiny  # keeps log(p) finite where every teacher gives p ~ 0


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def combine_logits(logits, temperature=1.0, combine="prob", regression=False):
    """The ensemble's logits `[N, C]` (or `[N, S, C]`) from K teachers' `[K, N, C]` (float32).

    A single teacher's logits come back unchanged (`prob` returns them shifted per row, which no
    softmax sees: the soft targets are identical).
    """
    if combine not in COMBINES:
        raise ValueError(f"Unknown combine {combine!r}; use one of {', '.join(COMBINES)}.")
    z = np.asarray(logits, np.float64)
    if z.ndim < 2:
        raise ValueError(f"logits must be [teachers, rows, ...], got shape {z.shape}.")
    if regression or combine == "logit" or len(z) == 1:
        return z.mean(axis=0).astype(np.float32)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    probs = np.exp(_log_softmax(z / temperature)).mean(axis=0)
    return (temperature * np.log(np.maximum(probs, _TINY))).astype(np.float32)
