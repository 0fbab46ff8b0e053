"""Checks for an exported student: op inventory, signature table, parity, TFLite.

Parity and the op inventory run in a **fresh Python process** that imports only
``tensorflow`` (plus ``tensorflow_text`` when the graph has TF Text ops, and the
``tensorflow_serving.apis`` protos to parse the warm-up file), so they prove that a server
without keras / keras-hub can run the export.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings

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
    from tinybert_tf.export.serving import TEXT_PAIR_SIGNATURE, TEXT_SIGNATURE, describe_student

    info = describe_student(model)
    texts = list(sample_texts or SAMPLE_TEXTS)
    pairs = list(SAMPLE_PAIRS)
    cases = {}
    if tokenizer is not None:
        single = _pack(tokenizer, [texts], text_len or max_len)
        longest = int(single["padding_mask"].sum(1).max())
        single = {k: v[:, :longest] for k, v in single.items()}
        full = _pack(tokenizer, list(zip(*pairs)), max_len)
    else:
        rng = np.random.default_rng(seed)
        vocab = int(info.backbone.vocabulary_size)
        single = {
            "token_ids": rng.integers(1, vocab, (3, max(2, max_len // 2)), dtype=np.int32),
        }
        full = {"token_ids": rng.integers(1, vocab, (2, max_len), dtype=np.int32)}
        for x in (single, full):
            x["segment_ids"] = np.zeros_like(x["token_ids"])
            x["padding_mask"] = np.ones_like(x["token_ids"])
            x["padding_mask"][0, -1] = 0
    for name, inputs in (("ids_texts", single), ("ids_pairs_full_length", full)):
        cases[name] = {"signature": "serving_default", "inputs": inputs}
    if TEXT_SIGNATURE in signature_names:
        cases["text"] = {
            "signature": TEXT_SIGNATURE,
            "inputs": {"text": np.array(texts, dtype=object)},
            "packed": _pack(tokenizer, [texts], text_len),
        }
        cases["text_pair"] = {
            "signature": TEXT_PAIR_SIGNATURE,
            "inputs": {
                "text": np.array([a for a, _ in pairs], dtype=object),
                "text_b": np.array([b for _, b in pairs], dtype=object),
            },
            "packed": _pack(tokenizer, list(zip(*pairs)), text_len),
        }
    for case in cases.values():
        ids = case.pop("packed", None) or case["inputs"]
        case["expected"] = keras_outputs(model, info.task, ids, info.head_activation)
    return cases


def run_fresh_process_checks(
    path: str, cases: dict, model_name: str = "student", timeout: int = 600
) -> dict:
    """Op inventory, parity and warm-up replay of a SavedModel in a fresh process.

    Returns:
        ``{"ops": {...,"min_tf_serving_version"}, "parity": {case: max_abs_diff},
        "parity_scale": {case: max_abs_keras_output},
        "warmup_replayed": int, "keras_modules_loaded": [...], "num_variables": int}``.
    """
    with tempfile.TemporaryDirectory(prefix="tinybert_export_check_") as work:
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
        outs = np.load(os.path.join(work, "outputs.npz"))
        parity, scale = {}, {}
        for case, spec in cases.items():
            diffs, mags = [], [0.0]
            for k in manifest_outputs(outs, case):
                ref = np.asarray(spec["expected"][k], np.float32)
                got = outs[f"{case}::{k}"]
                if ref.shape != got.shape:
                    diffs.append(float("inf"))
                else:
                    diffs.append(float(np.max(np.abs(ref - got))))
                    mags.append(float(np.max(np.abs(ref))) if ref.size else 0.0)
            parity[case] = max(diffs) if diffs else float("inf")
            scale[case] = max(mags)
    ops = result["ops"]
    ops["min_tf_serving_version"] = TF_TEXT_MIN_TF_SERVING if ops["tf_text_ops"] else None
    if result["keras_modules_loaded"]:
        ops["unknown_ops"] = ops["unknown_ops"] + ["<needs keras to load>"]
    result["parity"] = parity
    result["parity_scale"] = scale  # max |Keras output| per case
    return result


def manifest_outputs(outs, case: str):
    prefix = case + "::"
    return [k[len(prefix) :] for k in outs.files if k.startswith(prefix)]


def start_saved_model_cli(path: str) -> subprocess.Popen:
    """Start ``saved_model_cli show --all --dir path`` (venv's CLI, else ``python -m``)."""
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    cmd = (
        [cli]
        if os.path.exists(cli)
        else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    )
    return subprocess.Popen(
        cmd + ["show", "--dir", path, "--all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )


def finish_saved_model_cli(proc: subprocess.Popen, timeout: int = 600) -> str:
    """The signature table printed by a :func:`start_saved_model_cli` process."""
    out, err = proc.communicate(timeout=timeout)
    return out if out.strip() else err


def saved_model_cli_show(path: str) -> str:
    """``saved_model_cli show --all --dir path`` output, as that tool prints it."""
    return finish_saved_model_cli(start_saved_model_cli(path))


def verify_export(
    path: str, model, tokenizer=None, sample_texts=None, model_name: str = "student"
) -> dict:
    """Re-verify an existing export directory against the Keras ``model``.

    Returns:
        ``{"ops", "parity", "warmup_replayed", "num_variables", "saved_model_cli"}``.
    """
    from tinybert_tf.export.serving import describe_student

    with open(os.path.join(path, "assets.extra", "export_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    info = describe_student(model)
    cases = build_parity_cases(
        model,
        tokenizer,
        info.max_sequence_length,
        config.get("text_sequence_length"),
        list(config["signatures"]),
        sample_texts,
    )
    result = run_fresh_process_checks(path, cases, model_name)
    result["saved_model_cli"] = saved_model_cli_show(path)
    return result


def check_tflite(model, info, out_dir: str, cases: dict) -> dict:
    """Convert the token-id signature to TFLite (fp32 and dynamic-range int8) and compare.

    The TFLite graph has the same named inputs/outputs as ``serving_default`` (no length
    assertion: TFLite has no Assert op; callers must keep ``s <= max_sequence_length``).

    Returns:
        ``{"fp32_path", "fp32_bytes", "fp32_max_abs_diff", "fp32_mean_abs_diff", "int8_path",
        "int8_bytes", "int8_max_abs_diff", "int8_mean_abs_diff", "output_scale"}`` (diffs
        over the token-id parity cases, all outputs including padded positions).
    """
    import tensorflow as tf

    from tinybert_tf.export.serving import INPUT_NAMES, student_variable_dict

    holder = tf.Module(name="tflite_student")
    holder.student_variables = student_variable_dict(model)
    spec = [tf.TensorSpec([None, None], tf.int32, name=n) for n in INPUT_NAMES]

    @tf.function(input_signature=spec)
    def serving_default(token_ids, segment_ids, padding_mask):
        y = model(
            {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask},
            training=False,
        )
        if info.task == "encoder":
            return dict(y)
        y = tf.cast(y, tf.float32)
        if info.task == "regression":
            return {"logits": y, "score": y[:, 0]}
        if info.head_activation == "softmax":
            return {"probabilities": y}
        return {"logits": y, "probabilities": tf.nn.softmax(y)}

    os.makedirs(out_dir, exist_ok=True)
    concrete = serving_default.get_concrete_function()
    report = {}
    for kind in ("fp32", "int8"):
        conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
        if kind == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range int8 weights
        blob = conv.convert()
        fpath = os.path.join(out_dir, f"model_{kind}.tflite")
        with open(fpath, "wb") as f:
            f.write(blob)
        with warnings.catch_warnings():  # tf.lite.Interpreter deprecation notice
            warnings.simplefilter("ignore")
            interp = tf.lite.Interpreter(model_content=blob)
        runner = interp.get_signature_runner()
        worst, scale, errs = 0.0, 0.0, []
        for case in cases.values():
            if case["signature"] != "serving_default":
                continue
            got = runner(**{k: np.asarray(v, np.int32) for k, v in case["inputs"].items()})
            for k, v in got.items():
                ref = np.asarray(case["expected"][k], np.float32)
                err = np.abs(v - ref)
                worst = max(worst, float(err.max()))
                scale = max(scale, float(np.abs(ref).max()))
                errs.append(err.ravel())
        report[f"{kind}_path"] = fpath
        report[f"{kind}_bytes"] = len(blob)
        report[f"{kind}_max_abs_diff"] = worst
        report[f"{kind}_mean_abs_diff"] = float(np.concatenate(errs).mean()) if errs else 0.0
        report["output_scale"] = scale  # max |Keras output| over the compared cases
    return report
