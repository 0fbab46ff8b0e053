"""Build the offline real-text data from the Python standard library's docstrings and comments.

    python examples/stdlib/build_data.py --out_dir=/tmp/stdlib --what=both

writes ``<out_dir>/corpus/{train,heldout}.txt`` (unlabelled, one document per line) and
``<out_dir>/task/{train,dev,test}.tsv`` + ``labels.txt`` (docstring -> library area/package),
each with a ``stats.json``, and prints the counts. Takes ~10-20 s on one CPU core.
"""

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from examples.stdlib import stdlib_task, stdlib_text  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", None, "Output directory (gets corpus/ and task/ subdirs).")
flags.DEFINE_enum("what", "both", ["corpus", "task", "both"], "Which data set to build.")
flags.DEFINE_float("heldout_fraction", 0.05, "Share of corpus documents held out (by file).")
flags.DEFINE_integer("seed", 0, "Seed of the file-grouped splits and class caps.")
flags.DEFINE_integer("max_classes", 16, "Keep the K most frequent labels of the task.")
flags.DEFINE_enum("label_by", "area", ["area", "package"], "Task label: library area or package.")
flags.DEFINE_integer("max_per_class", 600, "Cap of task examples per class (seeded sample).")
flags.DEFINE_integer("max_docs", None, "Cap the corpus at this many documents (quick runs).")
flags.mark_flag_as_required("out_dir")


def main(argv):
    del argv
    if FLAGS.what in ("corpus", "both"):
        stats = stdlib_text.build_corpus(
            os.path.join(FLAGS.out_dir, "corpus"),
            heldout_fraction=FLAGS.heldout_fraction,
            seed=FLAGS.seed,
            max_docs=FLAGS.max_docs,
        )
        for split in ("train", "heldout"):
            s = stats[split]
            print(f"corpus {split}: {s['docs']} docs, {s['words']} words, {s['files']} files")
    if FLAGS.what in ("task", "both"):
        stats = stdlib_task.build_task(
            os.path.join(FLAGS.out_dir, "task"),
            max_classes=FLAGS.max_classes,
            seed=FLAGS.seed,
            label_by=FLAGS.label_by,
            max_per_class=FLAGS.max_per_class,
        )
        print(f"task ({FLAGS.label_by}): {len(stats['labels'])} classes, examples per split:")
        print(json.dumps(stats["total"]))
        print(json.dumps(stats["counts"]))


if __name__ == "__main__":
    app.run(main)
