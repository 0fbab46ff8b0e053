"""What an export wrote and what its checks measured (`ExportReport`), and the tolerances the
checks are held to."""

from __future__ import annotations

import dataclasses

# Parity of the served graph with the Keras model: max|diff| <= PARITY_TOL + PARITY_RTOL * max|y|.
# Tiny students land near 1e-8. A real 6-layer, 384-wide encoder (MiniLM-L6) differs by up to
# ~7e-5 on sequence outputs of magnitude ~6, because graph-mode kernels sum in another order
# (the same Keras model in eager vs tf.function already differs by ~3e-5), hence the
# relative term.
PARITY_TOL = 1e-5
PARITY_RTOL = 1e-4
TFLITE_TOL = 1e-4
HF_TOL = 1e-5


def parity_tolerance(scale: float) -> float:
    """Allowed max|diff| for outputs whose largest magnitude is ``scale``."""
    return PARITY_TOL + PARITY_RTOL * float(scale)


@dataclasses.dataclass
class ExportReport:
    """What `publish.export` wrote and what its checks measured (also printed by ``summary``)."""

    path: str
    model_name: str
    version: int
    task: str
    max_sequence_length: int
    signatures: dict
    ops: dict = dataclasses.field(default_factory=dict)
    min_tf_serving_version: str | None = None
    saved_model_cli: str = ""
    parity: dict = dataclasses.field(default_factory=dict)
    parity_scale: dict = dataclasses.field(default_factory=dict)
    warmup_records: int = 0
    warmup_replayed: int = 0
    hf_dir: str | None = None
    hf_max_abs_diff: float | None = None
    tflite: dict | None = None
    size_bytes: int = 0
    latency_ms: dict = dataclasses.field(default_factory=dict)
    timings_s: dict = dataclasses.field(default_factory=dict)
    verified: bool = False
    ok: bool = True
    problems: list = dataclasses.field(default_factory=list)

    def record_checks(self, fresh: dict, saved_model_cli: str) -> None:
        """Take the fresh-process results (`checks.run_fresh_process_checks`) and the
        ``saved_model_cli`` table; a parity over tolerance, an op outside TF + TF Text or a
        warm-up record that did not replay becomes a problem."""
        self.ops = fresh["ops"]
        self.min_tf_serving_version = fresh["ops"]["min_tf_serving_version"]
        self.parity = fresh["parity"]
        self.parity_scale = fresh["parity_scale"]
        self.warmup_replayed = fresh["warmup_replayed"]
        self.latency_ms = fresh["latency"]
        self.saved_model_cli = saved_model_cli
        self.verified = True
        for case, diff in self.parity.items():
            tol = parity_tolerance(self.parity_scale[case])
            if not diff <= tol:
                self.problems.append(f"parity {case}: {diff:.3g} > {tol:.3g}")
        if self.ops.get("unknown_ops"):
            self.problems.append(f"ops outside TF + TF Text: {self.ops['unknown_ops']}")
        if self.warmup_replayed != self.warmup_records:
            self.problems.append(f"warm-up replayed {self.warmup_replayed}/{self.warmup_records}")

    def record_hf(self, hf_dir: str, max_abs_diff: float) -> None:
        """Take the HF checkpoint's round-trip difference; over ``HF_TOL`` is a problem."""
        self.hf_dir, self.hf_max_abs_diff = hf_dir, max_abs_diff
        if not max_abs_diff <= HF_TOL:
            self.ok = False
            self.problems.append(f"HF round trip {max_abs_diff:.3g} > {HF_TOL:g}")

    def record_tflite(self, tflite: dict) -> None:
        """Take `checks.check_tflite`'s report. fp32 must match (``TFLITE_TOL`` plus the
        SavedModel check's relative slack); int8 (dynamic-range weights) is only reported."""
        self.tflite = tflite
        tol = TFLITE_TOL + PARITY_RTOL * tflite["output_scale"]
        tflite["fp32_tolerance"] = tol
        if not tflite["fp32_max_abs_diff"] <= tol:
            self.ok = False
            diff = tflite["fp32_max_abs_diff"]
            self.problems.append(f"TFLite fp32 parity {diff:.3g} > {tol:.3g}")

    def summary(self) -> str:
        """Human-readable multi-line report."""
        lines = [
            f"exported {self.model_name} v{self.version} ({self.task}) -> {self.path}",
            f"  size {self.size_bytes / 1e6:.2f} MB, max_sequence_length {self.max_sequence_length}",
        ]
        for name, sig in self.signatures.items():
            lines.append(f"  signature {name}: {list(sig['inputs'])} -> {list(sig['outputs'])}")
        lines += self._check_lines()
        if self.hf_dir:
            lines.append(
                f"  HF checkpoint {self.hf_dir}: round trip max|diff| {self.hf_max_abs_diff}"
            )
        if self.tflite:
            for k, v in self.tflite.items():
                lines.append(f"  tflite {k}: {v}")
        if self.saved_model_cli:  # its ~100 lines are the report's `saved_model_cli`
            lines.append(f"  saved_model_cli show --all read it ({len(self.saved_model_cli.splitlines())}"
                         f" lines; `saved_model_cli show --all --dir {self.path}` prints them)")
        if self.timings_s:
            lines.append(
                "  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings_s.items())
            )
        lines.append("  OK" if self.ok else f"  PROBLEMS: {self.problems}")
        return "\n".join(lines)

    def _check_lines(self) -> list[str]:
        """The summary's op, parity and warm-up lines."""
        lines = []
        if self.ops:
            lines.append(
                f"  ops: {self.ops.get('num_ops', 0)} types; core TF only: "
                f"{not self.ops.get('tf_text_ops') and not self.ops.get('unknown_ops')}; "
                f"TF Text: {self.ops.get('tf_text_ops', [])}; unknown: "
                f"{self.ops.get('unknown_ops', [])}"
            )
            lines.append(f"  minimum TF Serving: {self.min_tf_serving_version}")
        for case, diff in self.parity.items():
            lat = self.latency_ms.get(case)
            lat = f"; {lat['median_ms']:.2f} ms median at batch {lat['batch']}" if lat else ""
            tol = parity_tolerance(self.parity_scale.get(case, 0.0))
            lines.append(f"  parity {case}: max|diff| {diff:.3g} (tol {tol:.3g}){lat}")
        lines.append(f"  warm-up: {self.warmup_records} records, {self.warmup_replayed} replayed")
        return lines

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
