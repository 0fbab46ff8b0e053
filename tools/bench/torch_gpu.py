"""tools/accelerator_check.py's PyTorch peer on the GPU (its child process; imports torch, never
keras, jax or TensorFlow): tools/bench/torch_peer.py's HF loop with autocast on the device."""

from __future__ import annotations

import contextlib
import platform
import time


def uniform_layer_map(t_layers, s_layers):
    # tinybert_tf.distill.recipes.resolve_layer_map("uniform", ...), the general recipe's map.
    return [(i + 1) * (t_layers // s_layers) - 1 for i in range(s_layers)]


def torch_worker(args, cfg):
    """Time the peer's variants (`args.peer_variants`) on `cfg`'s shapes; a JSON-able dict."""
    import torch
    import transformers

    from bench.common import median
    from bench.keras_step import random_batch  # numpy only
    from bench.torch_peer import bert_config, intermediate_loss, register_scores_attention

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sink = []
    register_scores_attention(torch, transformers, sink)

    def amp(on):
        return torch.autocast(device, dtype=torch.bfloat16) if on else contextlib.nullcontext()

    def bert(arch):
        return transformers.BertModel(bert_config(transformers, arch, cfg.vocab, cfg.seq)).to(device)

    batch = random_batch(cfg)
    x = {"input_ids": torch.from_numpy(batch["token_ids"]).long().to(device),
         "token_type_ids": torch.from_numpy(batch["segment_ids"]).long().to(device),
         "attention_mask": torch.from_numpy(batch["padding_mask"]).long().to(device)}
    keep = x["attention_mask"].float()[:, None, None, :]
    layer_map = uniform_layer_map(cfg.teacher["num_layers"], cfg.student["num_layers"])

    def features(model, on):
        sink.clear()
        with amp(on):
            out = model(**x, output_hidden_states=True)
        return list(out.hidden_states), list(sink)

    def time_variant(name):
        torch.manual_seed(0)
        teacher = bert(cfg.teacher).eval()
        if name == "bf16_teacher":
            teacher = teacher.to(torch.bfloat16)
        t_amp = name == "bf16_autocast"
        student = bert(cfg.student).train()
        projection = torch.nn.Linear(cfg.student["hidden_dim"], cfg.teacher["hidden_dim"]).to(device)
        optimizer = torch.optim.AdamW(list(student.parameters()) + list(projection.parameters()),
                                      lr=1e-4)

        def step():
            # tools/bench/torch_peer.py `_TorchStep.step`, with autocast on this device.
            with torch.no_grad():
                t_hidden, t_scores = features(teacher, t_amp)
            s_hidden, s_scores = features(student, True)
            with amp(True):
                projected = [projection(h) for h in s_hidden]
            loss = intermediate_loss(torch, s_hidden, t_hidden, s_scores, t_scores, projected,
                                     layer_map, keep)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return float(loss.detach())  # synchronises

        times, loss = [], float("nan")
        for i in range(args.warmup + args.steps):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss = step()
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
        step_s = median(times)
        return {"step_ms": step_s * 1e3, "step_ms_min": min(times) * 1e3,
                "seq_per_s": cfg.batch / step_s, "timed_steps": len(times), "loss": loss}

    results = {}
    for name in args.peer_variants:
        results[name] = time_variant(name)
        if device == "cuda":
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    return {"variants": results, "device": device, "device_name": name,
            "torch": torch.__version__, "transformers": transformers.__version__}
