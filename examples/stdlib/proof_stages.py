"""Shared stages of the task-distillation proof (examples/stdlib/task_proof.py): the resumable
stage runner, the data (task, corpus, transfer set, and their `--smoke` subsamples) and the two
students' starts. Kept apart from the rows so each piece stays short and testable.
"""

from __future__ import annotations

import collections
import json
import os
import random
import time


class Stages:
    """Runs named stages once (an output path that exists means done); wall-clock per stage in
    `timings/<stage>.json` (one file each, so several processes can share a workdir)."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "timings")
        os.makedirs(self.dir, exist_ok=True)

    def run(self, name, output, fn):
        """`fn()` unless `output` exists; records its seconds; returns `fn()`'s result or output."""
        if os.path.exists(output):
            print(f"== {name}: done ({output})")
            return output
        print(f"== {name} ...", flush=True)
        start = time.time()
        result = fn()
        with open(os.path.join(self.dir, _file_name(name)), "w") as f:
            json.dump({"stage": name, "seconds": round(time.time() - start, 1)}, f)
        _release_models()
        return result or output

    def seconds(self, name):
        """Recorded wall-clock of stage `name`, or None when it has not run here."""
        path = os.path.join(self.dir, _file_name(name))
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)["seconds"]

    def timings(self):
        """{stage: seconds} of every recorded stage."""
        out = {}
        for name in sorted(os.listdir(self.dir)):
            with open(os.path.join(self.dir, name)) as f:
                record = json.load(f)
            out[record["stage"]] = record["seconds"]
        return out


def _file_name(stage):
    return stage.replace(" ", "_").replace("/", "-") + ".json"


def _release_models():
    """Drop the finished stage's models and graphs: one process runs dozens of stages."""
    import keras

    keras.backend.clear_session()  # and one garbage collection


# ---- data -----------------------------------------------------------------------------------------


def filtered_corpus(corpus_dir, task_dir):
    """The general-distillation corpus without any document of a dev or test source file."""
    held_out = set()
    for split in ("dev", "test"):
        with open(os.path.join(task_dir, f"{split}.src")) as f:
            held_out |= {line.strip() for line in f if line.strip()}
    out = os.path.join(corpus_dir, "train_no_task_eval.txt")
    with open(os.path.join(corpus_dir, "train.txt")) as docs, \
            open(os.path.join(corpus_dir, "train.src")) as srcs, open(out, "w") as f:
        f.writelines(d for d, s in zip(docs, srcs) if s.strip() not in held_out)
    return out


def subsample_task(src_dir, out_dir, per_class, seed=0):
    """A stratified subsample of a `build_task` dir: at most `per_class[split]` rows of each label
    per split (seeded), so every label the dev/test rows use is also a train label. Writes the
    same files (`*.tsv`, `*.src`, `labels.txt`, `stats.json`); for `--smoke` runs."""
    os.makedirs(out_dir, exist_ok=True)
    totals = {}
    for split, cap in per_class.items():
        with open(os.path.join(src_dir, f"{split}.tsv"), encoding="utf-8") as f:
            header, *rows = f.read().split("\n")[:-1]
        with open(os.path.join(src_dir, f"{split}.src"), encoding="utf-8") as f:
            srcs = f.read().split("\n")[:-1]
        by_label = collections.defaultdict(list)
        for row, src in zip(rows, srcs, strict=True):
            by_label[row.rsplit("\t", 1)[1]].append((row, src))
        rng = random.Random(f"{seed}-{split}")
        kept = [pair for label in sorted(by_label)
                for pair in rng.sample(by_label[label], min(cap, len(by_label[label])))]
        rng.shuffle(kept)
        with open(os.path.join(out_dir, f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write(header + "\n" + "".join(row + "\n" for row, _ in kept))
        with open(os.path.join(out_dir, f"{split}.src"), "w", encoding="utf-8") as f:
            f.writelines(src + "\n" for _, src in kept)
        totals[split] = len(kept)
    with open(os.path.join(src_dir, "labels.txt"), encoding="utf-8") as f:
        labels = f.read()
    with open(os.path.join(out_dir, "labels.txt"), "w", encoding="utf-8") as f:
        f.write(labels)
    stats = {"subsample_of": src_dir, "per_class": per_class, "total": totals}
    with open(os.path.join(out_dir, "stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
    return stats


def head_lines(path, n):
    """Keep the first `n` lines of a transfer set (and of its `.src` beside it), in place."""
    for p in (path, os.path.splitext(path)[0] + ".src"):
        if os.path.exists(p):
            with open(p, encoding="utf-8") as f:
                lines = f.read().split("\n")[:-1][:n]
            with open(p, "w", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in lines)
    return path


# The data stages' names (their timings/<name>.json), in the order build_data runs them.
DATA_STAGES = ("build task", "subsample task", "build corpus", "corpus without dev/test files",
               "build transfer set")
# Smoke sizes: rows per label and split (16 labels), transfer rows, stdlib files read.
SMOKE_PER_CLASS = {"train": 3, "dev": 2, "test": 2}
SMOKE_TRANSFER_ROWS = 100
SMOKE_FILES = 60


def build_data(w, stages, smoke):
    """The task (train/dev/test TSVs), the general-distillation corpus without dev/test files,
    and the transfer set (train files' prose only); subsampled when `smoke`.
    Returns {"task_dir", "corpus", "transfer"}."""
    from examples.stdlib import stdlib_task, stdlib_text

    task_dir = os.path.join(w, "task")
    full_dir = os.path.join(w, "task_full") if smoke else task_dir
    stages.run(DATA_STAGES[0], os.path.join(full_dir, "stats.json"),
               lambda: stdlib_task.build_task(full_dir))
    if smoke:
        stages.run(DATA_STAGES[1], os.path.join(task_dir, "stats.json"),
                   lambda: subsample_task(full_dir, task_dir, SMOKE_PER_CLASS))
    corpus_dir = os.path.join(w, "corpus")
    stages.run(DATA_STAGES[2], os.path.join(corpus_dir, "stats.json"),
               lambda: stdlib_text.build_corpus(corpus_dir,
                                                max_files=SMOKE_FILES if smoke else None))
    corpus = stages.run(DATA_STAGES[3],
                        os.path.join(corpus_dir, "train_no_task_eval.txt"),
                        lambda: filtered_corpus(corpus_dir, full_dir))
    transfer = os.path.join(w, "transfer", "transfer.txt")

    def make_transfer():
        # From the full task's files: its dev/test rows (a superset of the subsample's) are
        # the ones no transfer text may equal or nearly equal.
        stdlib_task.build_transfer(full_dir, transfer, max_files=SMOKE_FILES if smoke else None)
        if smoke:
            head_lines(transfer, SMOKE_TRANSFER_ROWS)

    stages.run(DATA_STAGES[4], transfer, make_transfer)
    return {"task_dir": task_dir, "corpus": corpus, "transfer": transfer}


# ---- starts ---------------------------------------------------------------------------------------


def make_wide_start(member_dir, out, num_layers=3):
    """The wide start: a `num_layers`-layer student of the teacher's width initialised from
    fine-tuned member 0's embeddings and layers (`students.init_from_teacher`), + its tokenizer."""
    import keras
    import keras_hub

    from tinybert_tf.distill import dtypes, students

    keras.mixed_precision.set_global_policy("float32")  # the weights, whatever ran before
    teacher = dtypes.load_preset(keras_hub.models.Backbone, member_dir)
    dtypes.save_preset(students.init_from_teacher(teacher, num_layers), out)
    keras_hub.tokenizers.Tokenizer.from_preset(member_dir).save_to_preset(out)
    return out


def tiny_teacher(tokenizer_preset, out):
    """A tiny random BERT (6 layers, hidden 48: a 3-layer wide start maps uniformly onto it and 12
    minilm_v2 relation heads divide its width) with `tokenizer_preset`'s tokenizer saved beside
    it: `--smoke`'s pre-trained teacher, so the pipeline runs end to end in minutes."""
    return _tiny_bert(tokenizer_preset, out, num_layers=6, num_heads=4, hidden_dim=48,
                      intermediate_dim=96)


def tiny_student(teacher_preset, out):
    """`--smoke`'s narrow student before general distillation: a random BERT of 2 layers, hidden
    24 (12 relation heads divide it), with the teacher's tokenizer; TinyBERT-4 in the full proof.
    A stage of a few steps spends its time building and saving models: this one has 0.75 M
    weights, TinyBERT-4 with MiniLM's vocabulary 14.5 M."""
    return _tiny_bert(teacher_preset, out, num_layers=2, num_heads=2, hidden_dim=24,
                      intermediate_dim=48)


def _tiny_bert(tokenizer_preset, out, **arch):
    import keras
    import keras_hub

    from tinybert_tf.distill import dtypes

    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(tokenizer_preset)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), max_sequence_length=128, **arch)
    dtypes.save_preset(backbone, out)
    tokenizer.save_to_preset(out)
    return out
