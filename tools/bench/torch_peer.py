"""The benchmark's PyTorch peer (HF transformers BERT), imported in its worker processes only:
attention scores recorded the way tinybert_tf.distill.features returns them, BERT configs of the
benchmark's shapes, the TinyBERT loss terms, and the `torch_step` worker (the peer of
`--bench=step` / `--bench=memory`)."""

from __future__ import annotations

import contextlib
import gc
import time

from .common import feature_errors, median
from .keras_step import random_batch

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


def torch_step_worker(cfg, args):
    """HF transformers BertModel teacher/student doing the same tinybert_general step.

    Attention scores (scaled q.k before masking, what TinyBERT's loss uses and what
    tinybert_tf.distill.features returns) are recorded by a registered attention function (HF
    returns probabilities). Loss terms as tinybert_tf.distill.losses: embedding and hidden MSE
    through one shared Linear(student -> teacher width), attention-score MSE with padded keys zeroed, all float32.
    Teacher under torch.no_grad (eval mode), student in train mode (dropout 0.1), AdamW.
    """
    import torch
    import transformers

    torch.set_num_threads(cfg.threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(cfg.inter_op_threads)
    torch.manual_seed(0)
    sink = []
    register_scores_attention(torch, transformers, sink)

    def bert(arch):
        return transformers.BertModel(bert_config(transformers, arch, cfg.vocab, cfg.seq))

    t_layers, s_layers = cfg.teacher["num_layers"], cfg.student["num_layers"]
    layer_map = [(i + 1) * (t_layers // s_layers) - 1 for i in range(s_layers)]
    teacher_fp32 = bert(cfg.teacher).eval()
    batch = random_batch(cfg)
    x = {"input_ids": torch.from_numpy(batch["token_ids"]).long(),
         "token_type_ids": torch.from_numpy(batch["segment_ids"]).long(),
         "attention_mask": torch.from_numpy(batch["padding_mask"]).long()}
    keep = x["attention_mask"].float()[:, None, None, :]

    def features(model, on):
        sink.clear()
        with autocast(torch, on):
            out = model(**x, output_hidden_states=True)
        return list(out.hidden_states), list(sink)

    with torch.no_grad():
        exact_hidden, exact_scores = features(teacher_fp32, False)
        exact = {"embeddings": exact_hidden[0].numpy(),
                 "hidden_states": [h.numpy() for h in exact_hidden[1:]],
                 "attention_scores": [s.numpy() for s in exact_scores]}

    results = {}
    for name in args["variants"]:
        if name not in ("fp32", "bf16_autocast", "bf16_teacher"):
            raise ValueError(f"Unknown peer variant {name!r}")
        torch.manual_seed(0)
        teacher = teacher_fp32
        if name == "bf16_teacher":
            teacher = bert(cfg.teacher).eval()
            teacher.load_state_dict(teacher_fp32.state_dict())
            teacher = teacher.to(torch.bfloat16)
        run = _TorchStep(teacher, bert(cfg.student).train(), cfg, layer_map, keep, features,
                         t_autocast=name == "bf16_autocast",
                         s_autocast=name in ("bf16_autocast", "bf16_teacher"))
        times = []
        for i in range(cfg.warmup + cfg.repeats):
            start = time.perf_counter()
            run.step()
            if i >= cfg.warmup:
                times.append(time.perf_counter() - start)
        step_s = median(times)
        result = {"step_ms": step_s * 1e3, "seq_per_s": cfg.batch / step_s,
                  "step_ms_min": min(times) * 1e3}
        if name != "fp32":
            with torch.no_grad():
                hidden, scores = features(teacher, run.t_autocast)
            approx = {"embeddings": hidden[0].float().numpy(),
                      "hidden_states": [h.float().numpy() for h in hidden[1:]],
                      "attention_scores": [s.float().numpy() for s in scores]}
            result.update(feature_errors(approx, exact))
        else:
            result.update(teacher_rel_err=0.0, teacher_rel_err_max=0.0)
        results[name] = result
        del run
        gc.collect()
    return {"variants": results, "torch": torch.__version__,
            "transformers": transformers.__version__, "threads": torch.get_num_threads()}


class _TorchStep:
    """One peer training step: teacher features under no_grad, student + shared projection,
    the tinybert_general loss terms in float32, AdamW."""

    def __init__(self, teacher, student, cfg, layer_map, keep, features, t_autocast, s_autocast):
        import torch

        self.torch, self.teacher, self.student = torch, teacher, student
        self.projection = torch.nn.Linear(cfg.student["hidden_dim"], cfg.teacher["hidden_dim"])
        self.layer_map, self.keep, self.features = layer_map, keep, features
        self.t_autocast, self.s_autocast = t_autocast, s_autocast
        params = list(student.parameters()) + list(self.projection.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step(self):
        torch = self.torch
        with torch.no_grad():
            t_hidden, t_scores = self.features(self.teacher, self.t_autocast)
        s_hidden, s_scores = self.features(self.student, self.s_autocast)
        with autocast(torch, self.s_autocast):
            projected = [self.projection(h) for h in s_hidden]
        loss = intermediate_loss(torch, s_hidden, t_hidden, s_scores, t_scores,
                                             projected, self.layer_map, self.keep)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())
