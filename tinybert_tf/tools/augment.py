"""TinyBERT data augmentation of a TSV with a keras-hub masked-LM preset (resumable shards).

    python -m tinybert_tf.tools.augment --input=task/train.tsv --output_dir=/tmp/aug \\
        --masked_lm_preset=/path/to/bert_masked_lm_preset --n_aug=20

(or `tinybert-tf-augment ...`). The preset must hold a *MaskedLM task* (``task.json`` of e.g. ``BertMaskedLM``, saved with
``masked_lm.save_to_preset(dir)``) plus its WordPiece tokenizer. Writes
``aug-SSSSS-of-NNNNN.tsv`` shards (+ ``.done`` markers; a rerun skips finished shards) and
``augmented.tsv`` (original row first, then ``n_aug`` copies, labels copied). The input is
plain tab-separated by default (quotes are ordinary text, as in GLUE's files;
``--tsv_quoting=csv`` for a TSV written with CSV quoting); the output is always plain TSV, which
``--config.data.augmented_train_file`` reads back as written (a tab or line break inside a text,
possible only in a CSV-quoted input, is written as a space and counted: ``flattened_fields``).
"""

import json
import os

from absl import app, flags

from tinybert_tf.launch import hardware, heap  # os, gc: before TensorFlow is imported

FLAGS = flags.FLAGS


def define_flags():
    """Registers the tool's flags on absl's global FLAGS."""
    flags.DEFINE_string("input", None, "Input TSV with a header row (see --tsv_quoting).")
    flags.DEFINE_string("output_dir", None, "Output directory for shards and augmented.tsv.")
    flags.DEFINE_string("masked_lm_preset", None, "keras-hub preset dir of a MaskedLM task.")
    flags.DEFINE_integer("n_aug", 20, "Augmented copies per example (paper: 10-30).")
    flags.DEFINE_float("p", 0.4, "Probability of replacing each word.")
    flags.DEFINE_integer("num_candidates", 15, "Candidates per word (M).")
    flags.DEFINE_integer("seed", 0, "Global seed (per-example seeds derive from it).")
    flags.DEFINE_integer("batch_size", 64, "Masked variants per MLM forward pass.")
    flags.DEFINE_integer("seq_len", 128, "Longest MLM input; longer sentences use a window.")
    flags.DEFINE_integer("shard_size", 1000, "Input rows per output shard.")
    flags.DEFINE_bool("pair_context", True, "MLM input '[CLS] masked [SEP] original [SEP]'.")
    flags.DEFINE_string("text_column", "text", "Column to augment.")
    flags.DEFINE_string("text_b_column", None, "Second text column of pair tasks (also augmented).")
    flags.DEFINE_string("label_column", "label", "Label column (copied; checked to exist).")
    flags.DEFINE_enum("tsv_quoting", "none", ["none", "csv"],
                      "How --input is read: none (plain tab-separated, quotes are text, as GLUE) | "
                      "csv (CSV quoting). The output is always plain TSV.")
    flags.DEFINE_bool("verbose", False, "Traceback of a user error too (one line otherwise).")
    flags.mark_flags_as_required(["input", "output_dir", "masked_lm_preset"])


def load_masked_lm(preset: str):
    """(masked_lm, tokenizer) from a keras-hub preset; a UserError if it has no masked-LM head."""
    import keras_hub

    from tinybert_tf.distill import dtypes
    from tinybert_tf.errors import UserError

    task_json = os.path.join(preset, "task.json")
    if os.path.isdir(preset):
        name = ""
        if os.path.exists(task_json):
            with open(task_json) as f:
                name = json.load(f).get("class_name", "")
        if "MaskedLM" not in name:
            raise UserError(f"{preset} has no masked-LM head (task.json is {name or 'missing'}); "
                            "save a keras_hub *MaskedLM with save_to_preset and pass that directory")
    masked_lm = dtypes.load_preset(keras_hub.models.MaskedLM, preset, preprocessor=None)
    tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(preset)
    return masked_lm, tokenizer


def main(argv):
    del argv
    from tinybert_tf import cli

    hardware.quiet_python_logs(FLAGS.verbose)
    heap.import_settled(*heap.RUN_MODULES)
    cli.report(_augment, verbose=FLAGS.verbose)  # a user error (no MLM head, a bad TSV): one line


def _augment():
    from tinybert_tf.data import augment, augment_shards

    masked_lm, tokenizer = load_masked_lm(FLAGS.masked_lm_preset)
    augmenter = augment.Augmenter(
        masked_lm,
        tokenizer,
        p=FLAGS.p,
        num_candidates=FLAGS.num_candidates,
        seed=FLAGS.seed,
        batch_size=FLAGS.batch_size,
        seq_len=FLAGS.seq_len,
        pair_context=FLAGS.pair_context,
    )
    stats = augment_shards.augment_file(
        augmenter,
        FLAGS.input,
        FLAGS.output_dir,
        n_aug=FLAGS.n_aug,
        shard_size=FLAGS.shard_size,
        text_column=FLAGS.text_column,
        text_b_column=FLAGS.text_b_column,
        label_column=FLAGS.label_column,
        tsv_quoting=FLAGS.tsv_quoting,
    )
    print(json.dumps(stats))
    print(f"wrote {os.path.join(FLAGS.output_dir, 'augmented.tsv')}")


def entry():
    """`python -m tinybert_tf.tools.augment` and the console script `tinybert-tf-augment`."""
    hardware.enable_onednn()
    define_flags()
    app.run(main)


if __name__ == "__main__":
    entry()
