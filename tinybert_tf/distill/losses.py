"""Distillation loss terms in pure `keras.ops`, always computed in float32.

Each term returns the mean over the *local* batch; the Distiller divides by the number of replicas so
that the sum over replicas equals the mean over the global batch. Masks are [B, S] with 1 = real token.
Numerics follow the official TinyBERT code (huawei-noah/Pretrained-Language-Model) and DistilBERT
(huggingface/transformers research_projects/distillation) where noted.
"""

from __future__ import annotations

import math

from keras import ops


def _f32(x):
    return ops.cast(x, "float32")


def _safe_div(total, count):
    return total / ops.maximum(count, 1.0)


def attention_mse(student_scores, teacher_scores, padding_mask):
    """MSE of attention scores [B, heads, S, S] with padded *key* positions zeroed in both.

    Mean over all B*heads*S*S entries. Equals the official TinyBERT loss, which adds -1e4 to masked
    keys and then zeroes every entry <= -1e2 before `MSELoss()`.
    """
    keep = _f32(padding_mask)[:, None, None, :]
    diff = (_f32(student_scores) - _f32(teacher_scores)) * keep
    return ops.mean(ops.square(diff))


def attention_kl(student_probs, teacher_probs, padding_mask, eps=1e-12):
    """KL(teacher || student) of attention probabilities [B, heads, S, S] (MiniLM-style).

    Summed over keys, averaged over heads and real query positions.
    """
    t = _f32(teacher_probs)
    s = _f32(student_probs)
    kl = ops.sum(t * (ops.log(t + eps) - ops.log(s + eps)), axis=-1)  # [B, heads, S]
    rows = _f32(padding_mask)[:, None, :] * ops.ones_like(kl)
    return _safe_div(ops.sum(kl * rows), ops.sum(rows))


def hidden_mse(student_hidden, teacher_hidden, padding_mask=None):
    """MSE of hidden states [B, S, H] (projection applied by the caller).

    Without a mask: mean over all entries (official TinyBERT numerics, padding included).
    With a mask: mean over the entries of real tokens only.
    """
    sq = ops.square(_f32(student_hidden) - _f32(teacher_hidden))
    if padding_mask is None:
        return ops.mean(sq)
    m = _f32(padding_mask)[:, :, None]
    return _safe_div(ops.sum(sq * m), ops.sum(m) * ops.cast(ops.shape(sq)[-1], "float32"))


def soft_cross_entropy(student_logits, teacher_logits, temperature=1.0, weights=None):
    """TinyBERT prediction loss: mean over rows of -sum_c softmax(t/T)_c * log_softmax(s/T)_c.

    Logits [..., C]. No T^2 factor (as in TinyBERT). The official code takes `.mean()` over classes
    too, a constant 1/C factor that only rescales the learning rate; we sum over classes instead.
    `weights` [...] (e.g. token-classification sample_weight [B, S]: 1 on first word pieces)
    averages over the weighted rows only, so padding and continuation pieces do not count.
    """
    t = ops.softmax(_f32(teacher_logits) / temperature, axis=-1)
    log_s = ops.log_softmax(_f32(student_logits) / temperature, axis=-1)
    ce = -ops.sum(t * log_s, axis=-1)
    if weights is None:
        return ops.mean(ce)
    w = _f32(weights) * ops.ones_like(ce)
    return _safe_div(ops.sum(ce * w), ops.sum(w))


def kl_divergence(student_logits, teacher_logits, temperature=1.0, weights=None):
    """Hinton/DistilBERT soft-target loss: T^2 * KL(softmax(t/T) || softmax(s/T)).

    Logits [..., C]; summed over classes, averaged over rows (rows weighted by `weights` [...] if
    given, e.g. real-token mask), times T^2 so gradients keep their scale as T changes.
    """
    log_t = ops.log_softmax(_f32(teacher_logits) / temperature, axis=-1)
    log_s = ops.log_softmax(_f32(student_logits) / temperature, axis=-1)
    kl = ops.sum(ops.exp(log_t) * (log_t - log_s), axis=-1)
    if weights is None:
        return ops.mean(kl) * temperature**2
    w = _f32(weights) * ops.ones_like(kl)
    return _safe_div(ops.sum(kl * w), ops.sum(w)) * temperature**2


def logits_mse(student_logits, teacher_logits, weights=None):
    """Regression heads (e.g. STS-B): mean squared error of the predictions [B, 1] (or [B]).

    `weights` [B]: a weighted mean over rows; weight-0 rows (e.g. unlabelled transfer rows whose
    target is NaN) are replaced before the square, so they cannot poison the loss or its gradient.
    """
    diff = _f32(student_logits) - _f32(teacher_logits)
    if weights is None:
        return ops.mean(ops.square(diff))
    w = ops.reshape(_f32(weights), (-1,) + (1,) * (len(diff.shape) - 1)) * ops.ones_like(diff)
    sq = ops.square(ops.where(w > 0, diff, 0.0))
    return _safe_div(ops.sum(sq * w), ops.sum(w))


def _relation_log_probs(vectors, key_is_real, num_relation_heads, role):
    """log softmax over keys of (A_r A_r^T) / sqrt(d_r) per relation head r: [B, R, S, S]."""
    x = _f32(vectors)
    width = math.prod(int(d) for d in x.shape[2:])
    if width % num_relation_heads:
        raise ValueError(f"relation_kl: num_relation_heads={num_relation_heads} must divide the "
                         f"{role} width {width} (heads * head size).")
    size = width // num_relation_heads
    shape = ops.shape(x)
    x = ops.reshape(x, (shape[0], shape[1], num_relation_heads, size))
    x = ops.transpose(x, (0, 2, 1, 3))  # [B, R, S, d_r]
    scores = ops.matmul(x, ops.transpose(x, (0, 1, 3, 2))) / math.sqrt(size)
    return ops.log_softmax(ops.where(key_is_real, scores, -1e9), axis=-1)


def relation_kl(student_vectors, teacher_vectors, padding_mask, num_relation_heads):
    """MiniLM self-attention relation loss: KL(teacher || student) of token-token relations.

    vectors: [B, S, heads, d] (queries, keys or values as the attention projections give them) or
    [B, S, H]. Each side is flattened to [B, S, H_x] (heads concatenated) and split into
    `num_relation_heads` R slices of d_r = H_x / R (MiniLMv2); widths and head counts of student
    and teacher may differ. Relation of head r: softmax_keys(A_r A_r^T / sqrt(d_r)), padded keys
    masked out. KL summed over keys, averaged over relation heads and real query rows. With R =
    the attention heads and values this is MiniLM v1's value relation.
    """
    key_is_real = ops.cast(padding_mask, "bool")[:, None, None, :]
    log_t = _relation_log_probs(teacher_vectors, key_is_real, num_relation_heads, "teacher")
    log_s = _relation_log_probs(student_vectors, key_is_real, num_relation_heads, "student")
    kl = ops.sum(ops.where(key_is_real, ops.exp(log_t) * (log_t - log_s), 0.0), axis=-1)
    rows = _f32(padding_mask)[:, None, :] * ops.ones_like(kl)  # [B, R, S]
    return _safe_div(ops.sum(kl * rows), ops.sum(rows))


def cosine_hidden(student_hidden, teacher_hidden, padding_mask, eps=1e-8):
    """DistilBERT cosine-embedding loss: mean over real tokens of 1 - cos(s, t); hidden [B, S, H]."""
    s = _f32(student_hidden)
    t = _f32(teacher_hidden)
    dot = ops.sum(s * t, axis=-1)
    norms = ops.sqrt(ops.sum(s * s, axis=-1)) * ops.sqrt(ops.sum(t * t, axis=-1))
    cos = dot / ops.maximum(norms, eps)
    m = _f32(padding_mask)
    return _safe_div(ops.sum((1.0 - cos) * m), ops.sum(m))


def pooled_cosine(student_hidden, teacher_hidden, padding_mask, eps=1e-8):
    """1 - cos of mean-pooled sentence embeddings (sentence-transformers pooling), averaged over
    the batch; hidden [B, S, H], mask [B, S]. What a sentence-embedding teacher is used for."""
    s = _mean_pool(student_hidden, padding_mask)
    t = _mean_pool(teacher_hidden, padding_mask)
    cos = ops.sum(s * t, axis=-1) / ops.maximum(
        ops.sqrt(ops.sum(s * s, axis=-1)) * ops.sqrt(ops.sum(t * t, axis=-1)), eps)
    return ops.mean(1.0 - cos)


def _mean_pool(hidden, padding_mask):
    m = _f32(padding_mask)[:, :, None]
    return ops.sum(_f32(hidden) * m, axis=1) / ops.maximum(ops.sum(m, axis=1), 1.0)


def pooled_similarity_kl(student_hidden, teacher_hidden, padding_mask, temperature=0.05,
                         eps=1e-8):
    """Relational distillation of sentence embeddings: KL(teacher || student) of each sentence's
    softmax over cosine similarities to the *other* sentences in the batch, at `temperature`.

    What nearest-neighbour search uses, and independent of the two widths (no projection needed).
    hidden [B, S, H], mask [B, S]; mean over the batch of per-row KL. Batches of one give 0.
    """

    def log_probs(hidden):
        e = _mean_pool(hidden, padding_mask)
        e = e / ops.maximum(ops.sqrt(ops.sum(e * e, axis=-1, keepdims=True)), eps)
        sim = ops.matmul(e, ops.transpose(e)) / temperature
        eye = ops.eye(ops.shape(sim)[0], dtype="float32")
        return ops.log_softmax(sim - 1e9 * eye, axis=-1), eye

    log_s, eye = log_probs(student_hidden)
    log_t, _ = log_probs(teacher_hidden)
    off = 1.0 - eye  # the diagonal has p = 0 in both: leave it out of the sum
    kl = ops.sum(ops.exp(log_t) * (log_t - log_s) * off, axis=-1)
    return ops.mean(kl)


def sparse_cross_entropy(logits, labels, weights=None):
    """Hard-label cross-entropy, logits [..., C], int labels [...].

    `weights` [...] (0/1 or real) selects positions: this is how masked-LM labels (keras-hub's
    `mask_weights`) and token-classification labels on first word pieces are counted. Labels at
    weight-0 positions may hold any value (they are clipped into range, then ignored).
    """
    logits = _f32(logits)
    num_classes = ops.shape(logits)[-1]
    labels = ops.clip(ops.cast(labels, "int32"), 0, num_classes - 1)
    log_p = ops.log_softmax(logits, axis=-1)
    nll = -ops.sum(ops.one_hot(labels, num_classes, dtype="float32") * log_p, axis=-1)
    if weights is None:
        return ops.mean(nll)
    w = _f32(weights)
    return _safe_div(ops.sum(nll * w), ops.sum(w))


def masked_lm_loss(logits, labels, weights):
    """Masked-LM cross-entropy [B, P, V] at the masked positions only (keras-hub convention:
    `labels` = original ids at `mask_positions`, `weights` = `mask_weights`, 0 for padding slots)."""
    return sparse_cross_entropy(logits, labels, weights)
