"""Pre-tokenise a text corpus into sharded TFRecords of packed token ids (e.g. for a TPU bucket).

Example (`tinybert-tf-prepare-corpus ...` is the same):
  python -m tinybert_tf.tools.prepare_corpus --input='wiki/*.txt.gz,books/*.txt' \\
      --output_dir=gs://b/corpus --tokenizer_preset=/path/to/keras_hub/preset \\
      --seq_len=128 --num_shards=64

Read the shards back with `tinybert_tf.data.shards.pretokenized_dataset('<output_dir>/*.tfrecord')`.
A corpus without documents (empty or whitespace-only files) is an error before anything is written:
`Error: ...` in one line, exit code 1.
"""

from __future__ import annotations

from absl import app, flags

from tinybert_tf.launch import hardware, heap  # os, gc: before TensorFlow is imported

FLAGS = flags.FLAGS


def define_flags(fv=FLAGS):
    """Registers the tool's flags on `fv` (the global FLAGS when run as a command)."""
    flags.DEFINE_string(
        "input", None, "Comma-separated files/globs (.txt, .gz, .tfrecord; gs:// ok).",
        flag_values=fv,
    )
    flags.DEFINE_string("output_dir", None, "Directory for shards + corpus_meta.json.", flag_values=fv)
    flags.DEFINE_string("vocab", None, "WordPiece vocabulary file, one token a line.", flag_values=fv)
    flags.DEFINE_bool("lowercase", False, "Lower-case text (with --vocab).", flag_values=fv)
    flags.DEFINE_string(
        "tokenizer_preset", None, "keras-hub preset directory/name of the teacher.", flag_values=fv
    )
    flags.DEFINE_integer("seq_len", 128, "Sequence length incl. [CLS]/[SEP].", flag_values=fv)
    flags.DEFINE_integer("num_shards", 8, "Number of output TFRecord shards.", flag_values=fv)
    flags.DEFINE_enum(
        "doc_format", "line", ["line", "blank_line"], "One doc per line, or blank-line separated.",
        flag_values=fv,
    )
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
    flags.DEFINE_bool("verbose", False, "Traceback of a user error too (one line otherwise).",
                      flag_values=fv)


def load_tokenizer(vocab=None, tokenizer_preset=None, lowercase=False):
    """The teacher's keras-hub tokenizer from a preset, or a BertTokenizer from a vocab file."""
    import keras_hub

    if bool(vocab) == bool(tokenizer_preset):
        raise app.UsageError("Pass exactly one of --vocab or --tokenizer_preset.")
    if tokenizer_preset:
        return keras_hub.tokenizers.Tokenizer.from_preset(tokenizer_preset)
    return keras_hub.tokenizers.BertTokenizer(vocabulary=vocab, lowercase=lowercase)


def run(fv=FLAGS):
    """Writes the shards described by parsed flags `fv`, prints the counts -> CorpusStats."""
    if not fv.input or not fv.output_dir:
        raise app.UsageError("--input and --output_dir are required.")
    from tinybert_tf.data import shards

    tokenizer = load_tokenizer(fv.vocab, fv.tokenizer_preset, fv.lowercase)
    stats = shards.write_pretokenized_corpus(
        fv.input, fv.output_dir, tokenizer, seq_len=fv.seq_len, num_shards=fv.num_shards,
        doc_format=fv.doc_format, progress=fv.progress,
    )
    print(
        f"prepare_corpus: {stats.files} files, {stats.documents} documents -> "
        f"{stats.sequences} sequences, {stats.tokens} tokens in {fv.num_shards} shards "
        f"at {fv.output_dir}"
    )
    print(
        f"prepare_corpus: skipped {stats.empty_lines} empty/whitespace-only lines of "
        f"{stats.lines}; {stats.invalid_utf8_lines} lines had invalid UTF-8 (replaced by U+FFFD); "
        f"{stats.split_documents} documents over {fv.seq_len - 2} pieces split into several "
        "sequences"
    )
    return stats


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tinybert_tf import cli

    hardware.quiet_python_logs(FLAGS.verbose)
    heap.import_settled(*heap.RUN_MODULES)

    cli.report(run, FLAGS, verbose=FLAGS.verbose)  # a mistake (e.g. no documents): one line


def entry():
    """`python -m tinybert_tf.tools.prepare_corpus` and the console script
    `tinybert-tf-prepare-corpus`."""
    hardware.enable_onednn()
    define_flags()
    app.run(main)


if __name__ == "__main__":
    entry()
