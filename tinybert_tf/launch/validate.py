"""Launch checks that run before `train.prepare_workdir` claims the workdir.

`check_launch` looks at everything cheap to check (numbers, the workdir, the inputs, the teacher
and student presets, a scan of the corpus, the distribution strategy of the Keras backend) and raises a one-line
`UserError` on the first mistake. Nothing is written before it passes, so a run re-launched with
the mistake fixed is not refused as "a different config".
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.error

import tensorflow as tf

from tinybert_tf.launch.strategy import PRECISIONS, LaunchError

SCAN_LINES = 100_000  # the launcher's corpus scan stops after about this many lines
TRAINING_MODES = ("general_distill", "task_distill", "finetune")


@dataclasses.dataclass
class Launch:
    """What the checks built and the launch uses: the strategy, the corpus scan record."""

    strategy: object
    corpus_scan: dict | None = None


def check_launch(c, workdir):
    """All checks of a training mode's config `c` -> Launch; raises a one-line UserError."""
    _check_numbers(c, workdir)
    check_workdir(workdir)
    teacher_dirs = check_teachers(c)
    tokenizer = _load_tokenizer(teacher_dirs[0])
    if c.mode != "finetune":
        check_student(c.student)
    scan = check_corpus(c, tokenizer) if c.mode == "general_distill" else None
    if c.mode != "general_distill":
        check_task_inputs(c)
    dist = make_strategy(c)
    from tinybert_tf.launch.strategy import check_batch_size

    check_batch_size(dist, c.batch_size)
    return Launch(dist, scan)


# ---- numbers ------------------------------------------------------------------------------------


def _resuming(workdir):
    from tinybert_tf.launch import checkpoints

    return "://" not in workdir and checkpoints.has_checkpoint(os.path.join(workdir, "checkpoints"))


def _check_numbers(c, workdir):
    if c.batch_size < 1:
        raise LaunchError(f"batch_size={c.batch_size}; pass --config.batch_size=<N >= 1> "
                          "(the global batch, split across replicas).")
    if c.precision != "auto" and c.precision not in PRECISIONS:
        raise LaunchError(f"Unknown precision {c.precision!r}; use one of auto, "
                          f"{', '.join(PRECISIONS)}.")
    if c.checkpoint_every < 1:
        raise LaunchError(f"checkpoint_every={c.checkpoint_every}; pass --config.checkpoint_every="
                          "<steps >= 1> (a multiple of log_every).")
    if c.mode == "general_distill":
        if c.steps < 1 and not _resuming(workdir):
            raise LaunchError(f"steps={c.steps}: nothing to train (the student would be saved "
                              "untrained); pass --config.steps=<N >= 1>.")
        log_every = max(1, min(c.log_every, c.steps))
        if c.checkpoint_every % log_every:  # what train.run refuses, before the workdir is claimed
            raise LaunchError(f"checkpoint_every ({c.checkpoint_every}) must be a multiple of "
                              f"log_every ({log_every}).")
        if c.data.seq_len < 3:
            raise LaunchError(f"data.seq_len={c.data.seq_len} is too small; use at least 3.")
        return
    stages = {"finetune": ["finetune"], "task_distill": {
        "intermediate": ["intermediate"], "prediction": ["prediction"],
        "both": ["intermediate", "prediction"]}.get(c.stages)}[c.mode]
    if stages is None:
        raise LaunchError(f"stages must be intermediate, prediction or both; got {c.stages!r}.")
    from tinybert_tf.launch import config_lib

    for stage in stages:
        epochs, patience = config_lib.stage_budget(c, stage)
        if epochs < 1:
            raise LaunchError(f"{stage}.epochs={epochs}: nothing to train; pass "
                              f"--config.{stage}.epochs=<N >= 1>.")
        if patience < 0:
            raise LaunchError(f"{stage}.patience={patience}; pass --config.{stage}.patience="
                              "<evaluations >= 1>, or 0 to never stop early.")


# ---- workdir and inputs ---------------------------------------------------------------------------


def check_workdir(workdir):
    """A local workdir (or, when it does not exist yet, its nearest existing parent) must be a
    directory this user can write; bucket paths (gs://) are checked when first written."""
    if not workdir:
        raise LaunchError("--workdir is empty; pass a run directory (local path or gs://).")
    if "://" in workdir:
        return
    probe = os.path.abspath(workdir)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise LaunchError(f"workdir {workdir}: {probe} is a file, not a directory; pass another "
                          "--workdir.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LaunchError(f"workdir {workdir} is not writable ({probe} is read-only for this "
                          "user); pass a --workdir you can write to.")


def _check_files(value, key):
    """Comma-separated files/globs of config key `key`: each matches, not all are empty."""
    files = []
    for pattern in (p.strip() for p in str(value).split(",") if p.strip()):
        matched = tf.io.gfile.glob(pattern)
        if not matched:
            raise LaunchError(f"{key}: no file matches {pattern!r}; check the path.")
        files += [m for m in matched if not tf.io.gfile.isdir(m)]
    if files and not any(tf.io.gfile.stat(f).length for f in files):
        raise LaunchError(f"{key}: {value} is empty; pass a file with rows.")


def check_task_inputs(c):
    """The task's files (task=file) and transfer sets exist and are not empty; a task name is
    known. Their rows are checked when the task is loaded."""
    from tinybert_tf.data import task_files, tasks

    d = c.data
    task_files.check_tsv_quoting(d.tsv_quoting)  # a UserError: one line, before the claim
    if c.task == "file":
        if not d.train_file:
            raise LaunchError("task=file needs --config.data.train_file=<TSV, CSV or JSONL>.")
        for key in ("train_file", "eval_file", "test_file"):
            if d[key]:
                _check_files(d[key], f"data.{key}")
    else:
        tasks.get_task(c.task)
    if c.mode == "task_distill":
        for key in ("transfer_file", "augmented_train_file"):
            if c[key]:
                _check_files(c[key], key)


def check_corpus(c, tokenizer=None):
    """The corpus matches files with documents -> its scan record (also for pretokenized
    shards: their `corpus_meta.json` counts). A text corpus is scanned for about SCAN_LINES
    lines (`corpus_scan.scan_corpus`); when that part holds no document the rest is read up to
    the first one."""
    from tinybert_tf.data import corpus, corpus_scan, shards

    d = c.data
    if not d.train:
        raise LaunchError("No corpus given; pass --config.data.train=<text files, globs or gs://>.")
    if d.format not in ("text", "pretokenized"):
        raise LaunchError(f"data.format must be 'text' or 'pretokenized', got {d.format!r}.")
    files = corpus.expand_patterns(d.train)
    fix = "pass --config.data.train=<files with text>"
    if d.format == "text":
        stats = corpus_scan.scan_corpus(files, d.doc_format, tokenizer, d.seq_len, SCAN_LINES)
        if not stats.documents and not any(
                True for _ in corpus.documents_dataset(files, d.doc_format).take(1)):
            stats.complete = True  # no document anywhere: refused below
        corpus_scan.require_documents(stats, d.train, fix)
        counts = dataclasses.asdict(stats)
        del counts["sequences"]  # counted by the shard writer only
        return {"format": "text", "patterns": d.train, "seq_len": d.seq_len,
                "max_lines": SCAN_LINES, **counts}
    shard_files = [f for f in files if not f.endswith(".json")]
    if not shard_files or not any(True for _ in tf.data.TFRecordDataset(shard_files).take(1)):
        raise corpus.CorpusError(f"Pretokenized shards {d.train!r} hold no sequences; re-run "
                                 "tools/prepare_corpus.py on a corpus with text.")
    meta = shards.read_corpus_meta(os.path.dirname(shard_files[0])) or {}
    if meta.get("seq_len", 0) > d.seq_len:
        raise corpus.CorpusError(f"Shards were packed to seq_len={meta['seq_len']} > "
                                 f"{d.seq_len}; pass --config.data.seq_len={meta['seq_len']}.")
    return {"format": "pretokenized", "patterns": d.train, "seq_len": d.seq_len,
            "shards": len(shard_files), "counts_from": "corpus_meta.json" if meta else None,
            **meta.get("stats", {})}


def scan_line(scan):
    """The printed line of a scan record from `check_corpus`."""
    if scan["format"] == "pretokenized":
        line = f"Corpus scan: {scan['shards']} pretokenized shard(s)"
        if "sequences" in scan:
            line += (f" of {scan['sequences']:,} sequences, {scan['tokens']:,} tokens packed from "
                     f"{scan['documents']:,} documents of {scan['files']:,} file(s) (corpus_meta."
                     f"json: {scan.get('empty_lines', 0):,} empty lines skipped, "
                     f"{scan.get('invalid_utf8_lines', 0):,} lines with invalid UTF-8 replaced, "
                     f"{scan.get('split_documents', 0):,} documents split)")
        return line + "."
    part = "" if scan["complete"] else (
        f" (the first {scan['lines']:,} lines only: the corpus is larger)")
    return (f"Corpus scan{part}: {scan['files']:,} file(s), {scan['documents']:,} documents, "
            f"{scan['empty_lines']:,} empty lines skipped, {scan['invalid_utf8_lines']:,} lines "
            f"with invalid UTF-8 replaced, {scan['tokens']:,} word pieces, "
            f"{scan['split_documents']:,} documents over {scan['seq_len'] - 2} pieces split "
            "into several sequences.")


def record_scan(scan, workdir):
    """Print the scan line and write the record to `workdir/corpus_scan.json`; the first
    `metrics.jsonl` write of the run copies it to that file's first line (`train.StepLogger`:
    metrics.jsonl appears only once training runs, which the un-claiming of a failed launch
    relies on)."""
    print(scan_line(scan))
    with tf.io.gfile.GFile(os.path.join(workdir, "corpus_scan.json"), "w") as f:
        json.dump(scan, f, indent=1)


# ---- presets and strategy -------------------------------------------------------------------------


def check_preset(path, what):
    """A teacher/student preset: a directory with a keras-hub `config.json`, a keras-hub preset
    name, or a handle with a scheme (hf://, kaggle://, gs://: checked when loaded)."""
    if not path:
        raise LaunchError(f"No {what} given; pass --config.{what}=<keras-hub preset name or dir>.")
    if "://" in path:
        return path
    if tf.io.gfile.isdir(path):
        config = os.path.join(path, "config.json")
        if not tf.io.gfile.exists(config):
            raise LaunchError(
                f"{what} {path} is a directory but not a keras-hub preset (no config.json); pass "
                "a preset dir (e.g. the `student`/`teacher` dir a run wrote) or a preset name.")
        try:
            with tf.io.gfile.GFile(config) as f:
                json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise LaunchError(f"{what} {config} is not valid JSON ({err}).") from None
        return path
    if tf.io.gfile.exists(path):
        raise LaunchError(f"{what} {path} is a file; pass a keras-hub preset directory or name.")
    if os.sep in path or path.startswith("."):
        raise LaunchError(
            f"{what} path {path} does not exist; pass --config.{what}=<keras-hub preset name or "
            "preset dir> (e.g. the `student`/`model` dir a previous run wrote).")
    import keras_hub

    if path not in keras_hub.models.Backbone.presets:
        raise LaunchError(
            f"{what} {path!r} is neither a directory nor a keras-hub preset name; pass a preset "
            "dir or a name such as bert_tiny_en_uncased (keras_hub.models.Backbone.presets).")
    return path


def check_teachers(c):
    """The config's teacher(s) (`teachers.resolve`): one for general distillation and finetune
    (its starting preset), one or an ensemble for task_distill; every one a preset, an ensemble's
    members compatible, the step settings that pick among them in range. Returns the dirs."""
    from tinybert_tf.launch import teachers

    dirs = teachers.resolve(c.teacher) if c.mode == "task_distill" else [
        teachers.one(c.teacher, c.mode)]
    for path in dirs:
        check_preset(path, "teacher")
    if c.mode != "task_distill":
        return dirs
    if not 0 <= c.intermediate.teacher < len(dirs):
        raise LaunchError(f"intermediate.teacher={c.intermediate.teacher} but there are "
                          f"{len(dirs)} teachers; pass 0..{len(dirs) - 1}.")
    from tinybert_tf.distill import ensemble

    if c.prediction.combine not in ensemble.COMBINES:
        raise LaunchError(f"prediction.combine={c.prediction.combine!r}; use one of "
                          f"{', '.join(ensemble.COMBINES)}.")
    if len(dirs) > 1 and not c.prediction.cache_teacher_logits and c.stages != "intermediate":
        raise LaunchError("several teachers need prediction.cache_teacher_logits=True (their "
                          "soft targets are combined once, over the cached logits).")
    teachers.check_compatible(dirs)
    return dirs


def _load_tokenizer(preset):
    import keras_hub

    try:
        return keras_hub.tokenizers.Tokenizer.from_preset(preset)
    except (ValueError, OSError) as err:  # a broken preset dir; no network for a preset name
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LaunchError(f"teacher {preset}: its tokenizer does not load ({first}).") from None


def check_student(spec):
    """`from_teacher:N` (N >= 1), a students.PRESETS name, or a preset (see check_preset)."""
    from tinybert_tf.distill import students

    if spec.startswith("from_teacher:"):
        n = spec.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise LaunchError(f"student {spec!r}: use from_teacher:<layers >= 1>, e.g. "
                              "from_teacher:6.")
    elif spec not in students.PRESETS:
        check_preset(spec, "student")


def make_strategy(c):
    """The config's distribution context (`strategy.make`: a tf.distribute strategy, or JAX's
    context); a TPU name the resolver cannot look up is a one-line error."""
    from tinybert_tf.launch import strategy

    try:
        return strategy.make(c)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise LaunchError(
            f"TPU {c.tpu!r} not reachable ({reason}); a TPU name is looked up through the GCE "
            "metadata server: on a TPU VM use --config.tpu=local, elsewhere grpc://host:port."
        ) from None
