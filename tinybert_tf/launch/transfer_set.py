"""The transfer set of a task run: unlabelled in-domain text (transfer_file, and the augmented
train file) the teacher labels, read once with eval/test texts and duplicates dropped and
counted (`data.transfer`), and recorded in `<workdir>/transfer.json`."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import builders, distribution, teachers


def transfer_set(config, spec, workdir, tokenizer=None):
    """`(columns, counts)` of the configured transfer files (transfer_file, augmented_train_file),
    eval/test texts and duplicates dropped; None when none is configured. Texts are compared as
    the teacher's tokenizer (`tokenizer`, else step 1's teacher's, as `task_distill` loads it)
    reads them: an uncased teacher cannot tell "Café" from "café", so neither can the checks."""
    paths = ",".join(p for p in (config.transfer_file, config.augmented_train_file) if p)
    if not paths:
        return None
    from tinybert_tf.data import transfer

    if tokenizer is None and config.teacher:
        lead = teachers.resolve(config.teacher)[config.intermediate.teacher]
        tokenizer = builders.load_tokenizer(lead)
    norm = transfer.tokenizer_normalization(tokenizer)
    try:
        d = config.data
        columns, counts = transfer.transfer_examples(spec, paths, d.tfds_data_dir or None,
                                                     skip_bad_rows=d.skip_bad_rows,
                                                     tsv_quoting=d.tsv_quoting, **norm)
    except ValueError as err:
        raise LaunchError(str(err)) from None
    print(f"Transfer set {paths}: {counts['read']} rows read, {counts['used']} used; dropped "
          f"{counts['leaked']} also in the eval/test splits, {counts['duplicate']} duplicates, "
          f"{counts['empty']} empty, {counts['bad_rows']} bad rows.")
    if any(norm.values()):
        what = " and ".join(n for f, n in ((norm["lowercase"], "lower-cases"),
                                           (norm["strip_accents"], "strips accents")) if f)
        print(f"  ({counts['leaked_by_case']} of the leaked and {counts['duplicate_by_case']} of "
              f"the duplicate rows match only by case/accents: the teacher's tokenizer {what}.)")
    if not distribution.is_chief():
        return columns, counts
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(os.path.join(workdir, "transfer.json"), "w") as f:
        json.dump({"paths": paths, "transfer_only": bool(config.transfer_only), **norm,
                   **counts}, f, indent=1)
    return columns, counts
