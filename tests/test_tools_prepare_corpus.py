"""tinybert_tf.tools.prepare_corpus: corpus -> sharded TFRecords of token ids, with printed counts."""

import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from tinybert_tf.data import shards
from tinybert_tf.tools import prepare_corpus

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the dog cat is good . 中 文 café".split()


def write_inputs(tmp_path):
    """vocab.txt beside a corpus dir with an empty line, a blank line and one bad byte."""
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_bytes(b"The dog is good.\n\n  \nCaf\xc3\xa9 \xff cat.\n")
    (tmp_path / "in" / "b.txt").write_text("中文。\nthe cat is good. the dog.\n", encoding="utf-8")
    return tmp_path / "in"


def test_run_writes_shards_and_prints_counts(tmp_path, capsys):
    src = write_inputs(tmp_path)
    fv = flags.FlagValues()
    prepare_corpus.define_flags(fv)
    out = tmp_path / "out"
    fv(["prepare_corpus", f"--input={src / 'a.txt'},{src / 'b.txt'}",
        f"--output_dir={out}", f"--vocab={tmp_path / 'vocab.txt'}", "--lowercase",
        "--seq_len=8", "--num_shards=2", "--noprogress"])
    stats = prepare_corpus.run(fv)
    printed = capsys.readouterr().out
    assert "2 files, 4 documents -> 5 sequences, 20 tokens in 2 shards" in printed
    assert "skipped 2 empty/whitespace-only lines of 6; 1 lines had invalid UTF-8" in printed
    assert (stats.sequences, stats.tokens) == (5, 20)  # [UNK] for U+FFFD and 。
    batch = next(iter(shards.pretokenized_dataset(str(out / "*.tfrecord"), batch_size=8,
                                                  shuffle_buffer=0, repeat=False)))
    ids = batch["token_ids"].numpy()
    assert ids.shape == (5, 8)
    words = sorted(" ".join(VOCAB[i] for i in row if i > 4) for row in ids)
    assert words == ["café cat .", "the cat is good .",
                     "the dog .", "the dog is good .", "中 文"]
    np.testing.assert_array_equal(batch["padding_mask"].numpy(), (ids != 0).astype(np.int32))


def test_missing_input_is_one_line_error(tmp_path):
    fv = flags.FlagValues()
    prepare_corpus.define_flags(fv)
    fv(["prepare_corpus", f"--input={tmp_path}/missing*.txt", f"--output_dir={tmp_path}",
        f"--vocab={tmp_path}/vocab.txt"])
    write_inputs(tmp_path)
    with pytest.raises(FileNotFoundError, match="No file matches corpus pattern .*missing"):
        prepare_corpus.run(fv)


def test_cli_end_to_end(tmp_path):
    src = write_inputs(tmp_path)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    base = [sys.executable, "-m", "tinybert_tf.tools.prepare_corpus",
            f"--vocab={tmp_path / 'vocab.txt'}", "--seq_len=16", "--num_shards=1",
            f"--output_dir={tmp_path / 'out'}"]
    ok = subprocess.run(base + [f"--input={src}/*.txt", "--doc_format=blank_line"],
                        env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "2 files, 3 documents" in ok.stdout
    assert (tmp_path / "out" / "corpus-00000-of-00001.tfrecord").exists()
    assert shards.read_corpus_meta(str(tmp_path / "out"))["stats"]["documents"] == 3
