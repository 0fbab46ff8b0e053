"""Shared pieces of the benchmark's PyTorch peer (HF transformers BERT), imported in its worker
process only: attention scores recorded the way tinybert_tf.distill.features returns them, and BERT
configs of the benchmark's shapes."""

from __future__ import annotations

import contextlib

SCORES_ATTENTION = "tinybert_scores"


def register_scores_attention(torch, transformers, sink):
    """Register an attention function that appends each layer's scaled q.k scores (before the
    mask: what TinyBERT's attention loss uses) to `sink`; HF returns probabilities only."""

    def scores_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                         **kwargs):
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        sink.append(scores)
        logits = scores
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                logits = logits.masked_fill(~attention_mask, torch.finfo(logits.dtype).min)
            else:
                logits = logits + attention_mask
        probs = torch.nn.functional.softmax(logits, dim=-1)
        probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
        return torch.matmul(probs, value).transpose(1, 2).contiguous(), None

    transformers.AttentionInterface.register(SCORES_ATTENTION, scores_attention)


def bert_config(transformers, arch, vocab, max_len, num_labels=2):
    """A `BertConfig` of one benchmark shape (dropout 0.1, score-recording attention)."""
    config = transformers.BertConfig(
        vocab_size=vocab, hidden_size=arch["hidden_dim"], num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"], intermediate_size=arch["intermediate_dim"],
        max_position_embeddings=max(512, max_len), hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, num_labels=num_labels,
    )
    config._attn_implementation = SCORES_ATTENTION
    return config


def autocast(torch, on):
    """bfloat16 autocast on CPU when `on`, else a no-op context."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


def intermediate_loss(torch, s_hidden, t_hidden, s_scores, t_scores, projected, layer_map, keep):
    """TinyBERT's emb + att + hidden terms in float32 (keys masked out of the attention MSE)."""
    loss = torch.mean((projected[0].float() - t_hidden[0].float()) ** 2)
    for s_i, t_i in enumerate(layer_map):
        diff = (s_scores[s_i].float() - t_scores[t_i].float()) * keep
        loss = loss + torch.mean(diff**2)
        loss = loss + torch.mean((projected[s_i + 1].float() - t_hidden[t_i + 1].float()) ** 2)
    return loss
