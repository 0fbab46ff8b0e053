"""Checks for an exported student: parity cases, op inventory, parity, ``saved_model_cli``.

Parity and the op inventory run in a **fresh Python process** that imports only
``tensorflow`` (plus ``tensorflow_text`` when the graph has TF Text ops, and the
``tensorflow_serving.apis`` protos to parse the warm-up file), so they prove that a server
without keras / keras-hub can run the export. The same process then runs
``saved_model_cli show --all`` (the console script's entry point, after the keras check).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

# The oldest stock TF Serving that links every TF Text op keras-hub's tokenizer and packer use
# (RoundRobinTrim, FastWordpieceTokenizeWithOffsets, RegexSplitWithOffsets, ...).
TF_TEXT_MIN_TF_SERVING = "2.20.0"

SAMPLE_TEXTS = (
    "The quick brown fox jumped over the lazy dog.",
    "A cat sat on the mat",
    "Distillation makes small students from large teachers, and this sentence is long "
    "enough to be truncated by the packer of a short model.",
    "Ünïcödé and UPPER case words",
)
SAMPLE_PAIRS = (
    ("the cat sat", "on the mat"),
    ("a quick fox", "the lazy dog jumped over the brown fox and the cat and the mat again"),
)

_FRESH_SCRIPT = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import op_def_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.client import pywrap_tf_session

path, work = sys.argv[1], sys.argv[2]
# `import tensorflow` itself pulls in a few keras.src utility modules; anything keras-ish
# loaded after this point would mean the SavedModel needs keras to run.
before = set(sys.modules)

def registered_ops():
    buf = pywrap_tf_session.TF_GetAllOpList()
    ops = op_def_pb2.OpList()
    ops.ParseFromString(buf if isinstance(buf, bytes) else pywrap_tf_session.TF_GetBuffer(buf))
    return {op.name for op in ops.op}

core = registered_ops()
sm = saved_model_pb2.SavedModel()
with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    sm.ParseFromString(f.read())
used, functions = set(), set()
for mg in sm.meta_graphs:
    used |= {n.op for n in mg.graph_def.node}
    for fn in mg.graph_def.library.function:
        functions.add(fn.signature.name)
        used |= {n.op for n in fn.node_def}
used -= functions
non_core = used - core
text_ops = set()
if non_core:
    import tensorflow_text  # noqa: F401  (registers the TF Text ops)
    text_ops = registered_ops() - core
result = {"ops": {
    "num_ops": len(used),
    "used_ops": sorted(used),
    "tf_text_ops": sorted(non_core & text_ops),
    "unknown_ops": sorted(non_core - text_ops),
}}
loaded = tf.saved_model.load(path)
manifest = json.load(open(os.path.join(work, "manifest.json")))
arrays = np.load(os.path.join(work, "inputs.npz"))
outs = {}
for case, spec in manifest.items():
    fn = loaded.signatures[spec["signature"]]
    got = fn(**{k: tf.constant(arrays[v]) for k, v in spec["inputs"].items()})
    for k, v in got.items():
        outs[case + "::" + k] = v.numpy()
np.savez(os.path.join(work, "outputs.npz"), **outs)
latency = {}
for case, spec in manifest.items():  # median wall time of 10 calls after the first
    fn = loaded.signatures[spec["signature"]]
    args = {k: tf.constant(arrays[v]) for k, v in spec["inputs"].items()}
    times = []
    for _ in range(11):
        t0 = time.perf_counter()
        fn(**args)
        times.append(time.perf_counter() - t0)
    batch = int(next(iter(args.values())).shape[0])
    latency[case] = {"batch": batch, "median_ms": 1000 * sorted(times[1:])[5]}
result["latency"] = latency
replayed = 0
warm = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
if os.path.exists(warm):
    from tensorflow_serving.apis import prediction_log_pb2
    for record in tf.data.TFRecordDataset(warm):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        req = log.predict_log.request
        fn = loaded.signatures[req.model_spec.signature_name or "serving_default"]
        fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in req.inputs.items()})
        replayed += 1
result["warmup_replayed"] = replayed
result["keras_modules_loaded"] = sorted(
    m for m in set(sys.modules) - before
    if m.split(".")[0] in ("keras", "keras_hub", "tf_keras"))
result["num_variables"] = len(loaded.student_variables)
# Last (it may import more than TensorFlow): the `saved_model_cli` console script's own entry
# point, `show --all`, in this process rather than a second one that imports TensorFlow again.
import contextlib, io
from tensorflow.python.tools import saved_model_cli
sys.argv = ["saved_model_cli", "show", "--dir", path, "--all"]
table = io.StringIO()
with contextlib.redirect_stdout(table):
    try:
        saved_model_cli.main()
    except SystemExit:  # absl's app.run ends the CLI with sys.exit
        pass
result["saved_model_cli"] = table.getvalue()
print("FRESH_RESULT " + json.dumps(result))
"""


def keras_outputs(model, task: str, inputs: dict, head_activation=None) -> dict:
    """Run the Keras student and name its outputs as the serving signatures do.

    Args:
        inputs: ``token_ids`` / ``segment_ids`` / ``padding_mask`` int32 ``[b, s]``.

    Returns:
        ``{"sequence_output" [b,s,H], "pooled_output" [b,H]}`` for an encoder;
        ``{"logits" [b,C], "probabilities" [b,C]}`` (``"score" [b]`` for regression).
    """
    y = model({k: np.asarray(v, np.int32) for k, v in inputs.items()}, training=False)
    if task == "encoder":
        return {k: np.asarray(v) for k, v in y.items()}
    y = np.asarray(y, np.float32)
    if head_activation == "softmax":
        probs = y
    else:
        e = np.exp(y - y.max(-1, keepdims=True))
        probs = e / e.sum(-1, keepdims=True)
    return {"logits": y, "probabilities": probs, "score": y[:, 0]}


def _pack(tokenizer, segments, seq_len):
    from tinybert_tf.data.packing import segment_packer

    packer = segment_packer(tokenizer, seq_len)
    token_ids, segment_ids = packer(tuple(tokenizer(list(s)) for s in segments))
    token_ids = np.asarray(token_ids, np.int32)
    return {
        "token_ids": token_ids,
        "segment_ids": np.asarray(segment_ids, np.int32),
        "padding_mask": (token_ids != tokenizer.pad_token_id).astype(np.int32),
    }


def build_parity_cases(
    model, tokenizer, max_len, text_len, signature_names, sample_texts=None, seed=0
) -> dict:
    """Real inputs for every signature plus the Keras model's outputs on them.

    Token-id cases are the tokenized sample texts (trimmed to the batch's longest, so ``s``
    is dynamic and below the max) and sentence pairs packed to exactly ``max_len``.

    Returns:
        ``{case: {"signature": str, "inputs": {name: array}, "expected": {name: array}}}``.
    """
    from tinybert_tf.export.serving import TEXT_SIGNATURE, describe_student

    info = describe_student(model)
    texts = list(sample_texts or SAMPLE_TEXTS)
    if tokenizer is not None:
        single, full = _packed_ids(tokenizer, texts, max_len, text_len)
    else:
        single, full = _random_ids(int(info.backbone.vocabulary_size), max_len, seed)
    cases = {}
    for name, inputs in (("ids_texts", single), ("ids_pairs_full_length", full)):
        cases[name] = {"signature": "serving_default", "inputs": inputs}
    if TEXT_SIGNATURE in signature_names:
        cases.update(_text_cases(tokenizer, texts, text_len))
    for case in cases.values():
        ids = case.pop("packed", None) or case["inputs"]
        case["expected"] = keras_outputs(model, info.task, ids, info.head_activation)
    return cases


def _packed_ids(tokenizer, texts, max_len, text_len):
    """Token-id inputs of ``texts`` (cut to the longest) and of ``SAMPLE_PAIRS`` (``max_len``)."""
    single = _pack(tokenizer, [texts], text_len or max_len)
    longest = int(single["padding_mask"].sum(1).max())
    single = {k: v[:, :longest] for k, v in single.items()}
    return single, _pack(tokenizer, list(zip(*SAMPLE_PAIRS)), max_len)


def _random_ids(vocab_size, max_len, seed):
    """Token-id inputs of random ids when there is no tokenizer (half and full length)."""
    rng = np.random.default_rng(seed)
    single = {
        "token_ids": rng.integers(1, vocab_size, (3, max(2, max_len // 2)), dtype=np.int32),
    }
    full = {"token_ids": rng.integers(1, vocab_size, (2, max_len), dtype=np.int32)}
    for x in (single, full):
        x["segment_ids"] = np.zeros_like(x["token_ids"])
        x["padding_mask"] = np.ones_like(x["token_ids"])
        x["padding_mask"][0, -1] = 0
    return single, full


def _text_cases(tokenizer, texts, text_len) -> dict:
    """The raw-text cases, with the ids the keras-hub packer makes of them (``"packed"``)."""
    from tinybert_tf.export.serving import TEXT_PAIR_SIGNATURE, TEXT_SIGNATURE

    pairs = list(SAMPLE_PAIRS)
    return {
        "text": {
            "signature": TEXT_SIGNATURE,
            "inputs": {"text": np.array(texts, dtype=object)},
            "packed": _pack(tokenizer, [texts], text_len),
        },
        "text_pair": {
            "signature": TEXT_PAIR_SIGNATURE,
            "inputs": {
                "text": np.array([a for a, _ in pairs], dtype=object),
                "text_b": np.array([b for _, b in pairs], dtype=object),
            },
            "packed": _pack(tokenizer, list(zip(*pairs)), text_len),
        },
    }


def run_fresh_process_checks(
    path: str, cases: dict, model_name: str = "student", timeout: int = 600
) -> dict:
    """Op inventory, parity and warm-up replay of a local SavedModel in a fresh process.

    Returns:
        ``{"ops": {...,"min_tf_serving_version"}, "parity": {case: max_abs_diff},
        "parity_scale": {case: max_abs_keras_output},
        "warmup_replayed": int, "keras_modules_loaded": [...], "num_variables": int,
        "saved_model_cli": the table ``saved_model_cli show --all`` prints}``.
    """
    with tempfile.TemporaryDirectory(prefix="tinybert_export_check_") as work:
        _write_manifest(work, cases)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run(
            [sys.executable, "-c", _FRESH_SCRIPT, path, work],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("FRESH_RESULT ")), None)
        if proc.returncode != 0 or line is None:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"fresh-process check of {path} failed: {tail}")
        result = json.loads(line[len("FRESH_RESULT ") :])
        parity, scale = _compare(np.load(os.path.join(work, "outputs.npz")), cases)
    ops = result["ops"]
    ops["min_tf_serving_version"] = TF_TEXT_MIN_TF_SERVING if ops["tf_text_ops"] else None
    if result["keras_modules_loaded"]:
        ops["unknown_ops"] = ops["unknown_ops"] + ["<needs keras to load>"]
    result["parity"] = parity
    result["parity_scale"] = scale  # max |Keras output| per case
    return result


def _write_manifest(work: str, cases: dict) -> None:
    """``work/inputs.npz`` (every case's inputs) and ``work/manifest.json`` (case ->
    signature and input name -> array key) for the fresh-process script."""
    manifest, arrays = {}, {}
    for case, spec in cases.items():
        manifest[case] = {"signature": spec["signature"], "inputs": {}}
        for k, v in spec["inputs"].items():
            key = f"{case}__{k}"
            if v.dtype == object:  # python str -> UTF-8 bytes, stored without pickle
                v = np.array([x.encode("utf-8") for x in v])
            arrays[key] = v
            manifest[case]["inputs"][k] = key
    np.savez(os.path.join(work, "inputs.npz"), **arrays)
    with open(os.path.join(work, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def _compare(outs, cases: dict) -> tuple[dict, dict]:
    """``({case: max|served - Keras|}, {case: max|Keras|})`` over every output of each case;
    a shape mismatch (or no output) is an infinite difference."""
    parity, scale = {}, {}
    for case, spec in cases.items():
        diffs, mags = [], [0.0]
        prefix = case + "::"
        for k in (k[len(prefix) :] for k in outs.files if k.startswith(prefix)):
            ref = np.asarray(spec["expected"][k], np.float32)
            got = outs[prefix + k]
            if ref.shape != got.shape:
                diffs.append(float("inf"))
            else:
                diffs.append(float(np.max(np.abs(ref - got))))
                mags.append(float(np.max(np.abs(ref))) if ref.size else 0.0)
        parity[case] = max(diffs) if diffs else float("inf")
        scale[case] = max(mags)
    return parity, scale
