"""An int8 frozen teacher (`teacher_dtype="int8"`): Keras' own weight quantisation, and its fidelity.

`quantize_teacher` runs Keras 3's `model.quantize("int8")` on a teacher loaded in float32: every
`Dense` and `EinsumDense` then holds an int8 kernel with a float32 scale per output channel, and
its call quantises its inputs per token (abs-max) and runs an int8 x int8 -> int32 matmul; the
token and segment (`Reversible`)`Embedding`s hold int8 rows with a scale per row. The layers keep their call signatures, so `features.encoder_features`
reads a quantised teacher as it reads a float one; LayerNorms, position embeddings, softmax and
the attention einsums stay float32. Only a frozen teacher is quantised: its int8 kernels cannot
be trained, and a student is never loaded with this dtype (`dtypes`).

`fidelity(reference, quantized, inputs)` compares the feature views of a float32 teacher and its
int8 copy on a batch: for the embeddings, each layer's hidden state and attention probabilities
(and the logits when both have a head), the cosine similarity of the two tensors flattened per
example over the real (unpadded) tokens, averaged over the examples; plus each kind's minimum
over the layers. `BOUND` is what the minimum of the embeddings, hidden states and attention
probabilities must reach; a load below it prints a one-line warning (`quantize_checked`).

Why 0.99: the pretrained MiniLM-L6-H384 (all-MiniLM-L6-v2) quantised this way measured hidden-
state cosines of 0.9996, 0.9993, 0.9990, 0.9986, 0.9984, 0.9971 (layers 1-6), attention
probabilities >= 0.9990 and embeddings 0.9998 on eight English sentences, and a last layer of
0.9966 on random token ids (0.9961 on `probe_inputs`); its bfloat16 copy measured >= 0.9999. The
error 1 - cos grows with depth (0.0004 after layer 1, 0.0029 after layer 6), so a 12-layer
BERT-base teacher is expected near 0.994: 0.99 leaves that margin. A cosine of 0.99 means a
relative feature error of about 14 % (sqrt(2 (1 - cos))), against MiniLM's 7.6 % at 0.9971 and
bfloat16's 1.4 %: below it, the student would be trained towards a different teacher.
"""

from __future__ import annotations

import gc
import sys
import warnings

import keras
import numpy as np

from tinybert_tf.distill import features

BOUND = 0.99
# The kinds whose minimum cosine is held to BOUND (logits are reported: a few-class head's
# logits near zero give unstable cosines).
BOUNDED = ("embeddings", "hidden_states", "attention_probs")
PROBE_EXAMPLES, PROBE_LENGTH = 4, 64


def quantize_teacher(model):
    """Quantise a frozen teacher's kernels to int8 in place (`model.quantize("int8")`); returns
    it frozen (`trainable = False`). Keras warns once per layer it has no int8 form for
    (LayerNorm, Dropout, ...): those stay float, and the warnings are silenced. The objects
    alive before are frozen out of the garbage collector meanwhile (`gc.freeze`), unless the
    process froze its imports already (the launcher's `launch.heap`): Keras collects after every
    kernel it replaces, 0.3 s a layer otherwise (11.6 s for MiniLM-L6, 0.75 s with this freeze,
    0.87 s with the launcher's)."""
    own_freeze = not gc.get_freeze_count()  # leave a freeze made by someone else alone
    if own_freeze:
        gc.freeze()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.quantize("int8")
    finally:
        if own_freeze:
            gc.unfreeze()
    gc.collect()  # once: frees the float kernels
    model.trainable = False
    return model


def feature_arrays(model, inputs):
    """The NumPy float32 feature view compared by `fidelity`: `embeddings`, `hidden_states` and
    `attention_probs` (one per layer) and, for a model with a head, `logits` (a masked LM's
    at `inputs["mask_positions"]`, none without them)."""
    view = features.encoder_features(model, inputs)
    positions = "mask_positions" in inputs or not hasattr(model, "masked_lm_head")
    logits = features.head_logits(model, view, inputs) if positions else None

    def numpy(x):
        return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")))

    out = {"embeddings": numpy(view["embeddings"]),
           "hidden_states": [numpy(h) for h in view["hidden_states"]],
           "attention_probs": [numpy(p) for p in view["attention_probs"]]}
    if logits is not None:
        out["logits"] = numpy(logits)
    return out


def cosine(a, b):
    """Cosine similarity of two arrays flattened (float64); 1.0 when both are zero."""
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.dot(a, b) / norms)


def _real(x, real, kind):
    """One example's tensor at its real tokens: [S, ...] rows; attention [heads, S, S] both
    query and key axes; logits [S, C] rows when token-level, else unchanged."""
    if kind == "attention_probs":
        return x[:, real][:, :, real]
    if kind == "logits" and (x.ndim < 2 or x.shape[0] != real.shape[0]):
        return x
    return x[real]


def _mean_cosine(a, b, mask, kind):
    pairs = [cosine(_real(a[i], mask[i], kind), _real(b[i], mask[i], kind))
             for i in range(a.shape[0])]
    return float(np.mean(pairs))


def compare(reference, quantized, padding_mask):
    """The fidelity report of two `feature_arrays` views of one batch (`padding_mask` [B, S]):
    `{kind: cosine or [cosine per layer], "min": {kind: minimum}, "worst": minimum over BOUNDED,
    "examples": B}`; each cosine is the mean over the examples of the per-example cosine over
    real tokens."""
    mask = np.asarray(padding_mask).astype(bool)
    report = {"examples": int(mask.shape[0]), "min": {}}
    for kind, ref in reference.items():
        if kind not in quantized:
            continue
        if isinstance(ref, list):
            report[kind] = [_mean_cosine(r, q, mask, kind) for r, q in zip(ref, quantized[kind])]
        else:
            report[kind] = _mean_cosine(ref, quantized[kind], mask, kind)
        report["min"][kind] = float(np.min(report[kind]))
    report["worst"] = min(report["min"][k] for k in BOUNDED if k in report["min"])
    return report


def fidelity(reference, quantized, inputs):
    """Per-layer cosine similarity of a float teacher's (`reference`) and its int8 copy's
    (`quantized`) features on `inputs` (keras-hub inputs; `mask_positions` too for masked LMs):
    the report of `compare`."""
    return compare(feature_arrays(reference, inputs), feature_arrays(quantized, inputs),
                   inputs["padding_mask"])


def probe_inputs(model, examples=PROBE_EXAMPLES, length=PROBE_LENGTH, seed=0):
    """A few fixed token sequences for the check at load: seeded random ids (BERT vocabularies
    keep special and [unusedN] tokens below 1000), lengths from `length` down to half of it
    (padding), plus `mask_positions` for a masked-LM head. On MiniLM-L6 random ids measured the
    cosines of real sentences (last layer 0.9966 against 0.9971)."""
    backbone = features.backbone_of(model)
    vocab = int(backbone.vocabulary_size)
    length = min(length, int(getattr(backbone, "max_sequence_length", length)))
    ids = np.random.default_rng(seed).integers(min(1000, vocab // 10), vocab, (examples, length))
    mask = np.zeros((examples, length), "int32")
    for i in range(examples):
        mask[i, :length - (i * length) // (2 * examples)] = 1
    inputs = {"token_ids": (ids * mask).astype("int32"), "segment_ids": np.zeros_like(mask),
              "padding_mask": mask}
    if hasattr(model, "masked_lm_head"):
        positions = np.arange(min(4, length), dtype="int32")
        inputs["mask_positions"] = np.tile(positions, (examples, 1))
    return inputs


def summary_line(report):
    """One line of a fidelity report's minimum cosines."""
    parts = [f"{kind.replace('_', ' ')} {report['min'][kind]:.4f}" for kind in report["min"]]
    return (f"Int8 teacher: min cosine to float32 over {report['examples']} probe sequences: "
            + ", ".join(parts) + f" (bound {BOUND}).")


def quantize_checked(model, inputs=None):
    """`quantize_teacher` with its fidelity measured on `inputs` (default `probe_inputs`):
    float32 features before, int8 after. Prints `summary_line`, and a one-line warning on stderr
    when the minimum is below `BOUND`. Returns the report."""
    inputs = probe_inputs(model) if inputs is None else inputs
    reference = feature_arrays(model, inputs)
    quantize_teacher(model)
    report = compare(reference, feature_arrays(model, inputs), inputs["padding_mask"])
    print(summary_line(report), flush=True)
    if report["worst"] < BOUND:
        print(f"Warning: the int8 teacher's features are below cosine {BOUND} of its float32 "
              f"ones ({report['worst']:.4f}); distil from --config.teacher_dtype=bfloat16 or "
              "float32 instead.", file=sys.stderr, flush=True)
    return report
