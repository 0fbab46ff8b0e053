"""The PyTorch peer of `benchmark.py --bench=task` (runs in its own process).

HF transformers BERT of the same shapes, fed the same word-piece ids as ours. Batches: shuffled
(seeded) and padded to their longest row by `DataCollatorWithPadding` ("dynamic"), or ordered by
the Trainer's `LengthGroupedSampler` (`group_by_length`, "grouped"). Steps as in task.py:
intermediate (teacher features under no_grad, student + Linear projection, emb/att/hidden MSE
in float32), prediction (student + soft cross-entropy against cached logits), finetune (teacher
+ cross-entropy); AdamW everywhere; autocast bfloat16 for the bf16 variant.
"""

from __future__ import annotations

import random
import time

from . import torch_peer
from .task import padding_fraction


def batches(ids, labels, batch, order, vocab_file, seed=0):
    """Lists of collated batches (dicts of tensors) in `order` ("dynamic" | "grouped")."""
    import torch
    import transformers
    from transformers.trainer_pt_utils import LengthGroupedSampler

    tokenizer = transformers.BertTokenizerFast(vocab_file=vocab_file)
    collate = transformers.DataCollatorWithPadding(tokenizer)
    if order == "dynamic":
        index = list(range(len(ids)))
        random.Random(seed).shuffle(index)
    else:
        generator = torch.Generator().manual_seed(seed)
        index = list(LengthGroupedSampler(batch, lengths=[len(t) for t in ids],
                                          generator=generator))
    out = []
    for start in range(0, len(index), batch):
        rows = [{"input_ids": ids[i], "label": labels[i]} for i in index[start:start + batch]]
        out.append(collate(rows))
    return out


class Steps:
    """The three step kinds over one teacher / student pair."""

    def __init__(self, cfg, teacher_arch, num_classes, autocast, seq):
        import torch
        import transformers

        self.torch, self.autocast = torch, autocast
        self.sink = []
        torch_peer.register_scores_attention(torch, transformers, self.sink)
        torch.manual_seed(0)

        def clf(arch):
            config = torch_peer.bert_config(transformers, arch, cfg["vocab"], seq, num_classes)
            return transformers.BertForSequenceClassification(config)

        self.teacher, self.student = clf(teacher_arch), clf(cfg["student"])
        self.projection = torch.nn.Linear(cfg["student"]["hidden_dim"], teacher_arch["hidden_dim"])
        self.layer_map = list(cfg["layer_map"])
        self.optimizers = {
            "intermediate": torch.optim.AdamW(list(self.student.parameters())
                                              + list(self.projection.parameters()), lr=1e-4),
            "prediction": torch.optim.AdamW(self.student.parameters(), lr=1e-4),
            "finetune": torch.optim.AdamW(self.teacher.parameters(), lr=1e-4),
        }
        self.rng = torch.Generator().manual_seed(0)

    def _features(self, model, x):
        self.sink.clear()
        with torch_peer.autocast(self.torch, self.autocast):
            out = model.bert(input_ids=x["input_ids"], attention_mask=x["attention_mask"],
                             output_hidden_states=True)
        return list(out.hidden_states), list(self.sink)

    def run(self, step, x):
        torch = self.torch
        if step == "intermediate":
            self.teacher.eval()
            self.student.train()
            with torch.no_grad():
                t_hidden, t_scores = self._features(self.teacher, x)
            s_hidden, s_scores = self._features(self.student, x)
            with torch_peer.autocast(torch, self.autocast):
                projected = [self.projection(h) for h in s_hidden]
            keep = x["attention_mask"].float()[:, None, None, :]
            loss = torch_peer.intermediate_loss(torch, s_hidden, t_hidden, s_scores, t_scores,
                                                 projected, self.layer_map, keep)
        else:
            model = self.student if step == "prediction" else self.teacher
            model.train()
            with torch_peer.autocast(torch, self.autocast):
                logits = model(input_ids=x["input_ids"],
                               attention_mask=x["attention_mask"]).logits.float()
            if step == "prediction":
                soft = torch.softmax(x["cached_logits"], -1)
                loss = -(soft * torch.log_softmax(logits, -1)).sum(-1).mean()
            else:
                loss = torch.nn.functional.cross_entropy(logits, x["labels"])
        optimizer = self.optimizers[step]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())


def worker(args):
    """{"variants": {"<order>:<precision>": {step: result}}, versions} for one sequence length."""
    import torch
    import transformers

    cfg = args["cfg"]
    torch.set_num_threads(cfg["threads"])
    generator = torch.Generator().manual_seed(0)
    results = {}
    for order in ("dynamic", "grouped"):
        data = batches(args["ids"], args["labels"], cfg["batch"], order, cfg["vocab_file"])
        for x in data:
            x["cached_logits"] = torch.randn(len(x["labels"]), args["num_classes"],
                                             generator=generator)
        pad = padding_fraction([x["attention_mask"].numpy() for x in data])
        examples = sum(len(x["labels"]) for x in data)
        for precision in cfg["peer_variants"]:
            steps = Steps(cfg, args["teacher"], args["num_classes"], precision != "fp32",
                          args["seq"])
            key = f"{order}:{precision}"
            results[key] = {}
            for step in ("intermediate", "prediction", "finetune"):
                for x in data:  # untimed pass (allocator warm-up, as ours traces)
                    steps.run(step, x)
                start = time.perf_counter()
                for _ in range(cfg["passes"]):
                    for x in data:
                        steps.run(step, x)
                seconds = (time.perf_counter() - start) / cfg["passes"]
                results[key][step] = {"examples_per_s": examples / seconds,
                                      "examples": examples, "batches": len(data),
                                      "padding_fraction": pad}
    return {"variants": results, "torch": torch.__version__,
            "transformers": transformers.__version__, "threads": torch.get_num_threads()}
