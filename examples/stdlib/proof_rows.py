"""The models of the task-distillation proof (examples/stdlib/task_proof.py): the teacher
ensemble, the two starts and every row, each one stage through `tinybert_tf.launch.modes.run`.

Every task stage trains under the same rule: up to `max_epochs` epochs (the package's file-task
default, 10), early-stopped `patience` dev evaluations after its dev accuracy last improved
(default 3), evaluated once per epoch unless `eval_every` is set; its model is the best dev
checkpoint (`selection.json` beside it). Nothing here reads the test split.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

STARTS = {"wide": "wide (3 layers of teacher member 0)",
          "narrow": "narrow (TinyBERT-4, minilm_v2 general distillation)"}
VARIANTS = {"a": "(a) fine-tuned, no teacher",
            "k1": "(k1) prediction-layer KD, best single teacher, + transfer set",
            "kE": "(kE) prediction-layer KD, ensemble, + transfer set",
            "tE": "(tE) two-step distillation, ensemble, + transfer set"}
ROWS = ["teachers"] + [f"{s}_{v}" for s in STARTS for v in (*VARIANTS, "seeds")]
WIDE_STAGE, GD_STAGE = "start wide (3 layers of member 0)", "general distillation (minilm_v2)"
SMOKE_STUDENT_STAGE = "tiny random student"
RELATION_HEADS = 12  # minilm_v2 relation heads: divide MiniLM's 384 and TinyBERT-4's 312


@dataclasses.dataclass
class Settings:
    """The proof's knobs (task_proof.py's flags after `--smoke` filled in its defaults)."""

    workdir: str
    members: int = 3
    gd_steps: int = 600
    teacher_lr: float = 1e-4
    student_lr: float = 1e-4
    hard_weight: float = 1.0
    temperature: float = 1.0
    temperatures: tuple = (1.0, 2.0, 4.0, 8.0)
    combine: str = "prob"
    seeds: int = 3
    max_epochs: int | None = None
    patience: int | None = None
    eval_every: int = 0
    seq_len: int = 64
    batch_size: int = 32
    latency_runs: int = 10
    smoke: bool = False


def kE_key(temperature):
    """Row key of (kE) at one temperature of the sweep, e.g. `kE_T2`."""
    return f"kE_T{temperature:g}"


def smoke_fields(s):
    """`--smoke` runs check the plumbing, not the speed: every stage in float32 without XLA, as
    the packaged `tiny` configs run (a stage of a few steps would otherwise spend its time
    compiling the hardware's fastest step); the full proof keeps the package's defaults."""
    if not s.smoke:
        return {}
    return {"precision": "float32", "teacher_dtype": "", "jit_compile": "False"}


def _load(name, **fields):
    from tinybert_tf.launch import config_lib

    return config_lib.load(name, **fields)


@dataclasses.dataclass(eq=False)  # hashed by identity: its methods are cached
class Proof:
    """The run's settings, stage runner, data paths and the packaged teacher preset; builds the
    teachers and starts on first use (each a resumable stage)."""

    s: Settings
    stages: object  # proof_stages.Stages
    data: dict
    teacher_pre: str

    @property
    def w(self):
        return self.s.workdir

    def task_fields(self, seed=0):
        """Config fields every task stage shares: the task files, batch, logging, seed, budget."""
        s, d = self.s, self.data
        fields = {"task": "file", "data.train_file": os.path.join(d["task_dir"], "train.tsv"),
                  "data.eval_file": os.path.join(d["task_dir"], "dev.tsv"),
                  "data.test_file": os.path.join(d["task_dir"], "test.tsv"),
                  "data.seq_len": s.seq_len, "batch_size": s.batch_size, "seed": seed,
                  "eval_every": s.eval_every,
                  # smoke stages run a few steps: chunks of one so any count divides them
                  "log_every": 1 if s.smoke else 20, "checkpoint_every": 1000 if s.smoke else 120,
                  **smoke_fields(s)}
        for stage in ("finetune", "intermediate", "prediction"):
            if s.max_epochs is not None:
                fields[f"{stage}.epochs"] = s.max_epochs
            if s.patience is not None:
                fields[f"{stage}.patience"] = s.patience
        return fields

    # ---- teachers ---------------------------------------------------------------------------

    @functools.cached_property
    def ensemble(self):
        """The fine-tuned ensemble dir (members.txt + member_K), trained on first use."""
        run_dir = os.path.join(self.w, "teachers")
        out = os.path.join(run_dir, "teacher")
        config = _load("task_distill", mode="finetune", teacher=self.teacher_pre,
                       **self.task_fields(), **{"finetune.members": self.s.members,
                                                "finetune.learning_rate": self.s.teacher_lr})
        self.stages.run(teachers_stage(self.s), os.path.join(out, "members.txt"),
                        lambda: _run(config, run_dir))
        return out

    def member(self, k):
        return os.path.join(self.ensemble, f"member_{k}")

    def member_selection(self, k):
        """Member k's selection.json (its run dir is finetune/member_K)."""
        return os.path.join(self.w, "teachers", "finetune", f"member_{k}", "selection.json")

    @functools.cache  # noqa: B019  (one Proof per process)
    def best_member(self):
        """Index of the member with the best dev accuracy (its selection.json's best)."""
        self.ensemble  # noqa: B018  (trains the teachers when missing)
        dev = [read_selection(self.member_selection(k))["best"]["value"]
               for k in range(self.s.members)]
        return max(range(len(dev)), key=lambda k: (dev[k], -k))

    # ---- starts -----------------------------------------------------------------------------

    @functools.cache  # noqa: B019
    def start(self, name):
        """The preset dir of start `name` (wide | narrow), built on first use."""
        if name == "wide":
            from examples.stdlib.proof_stages import make_wide_start

            out = os.path.join(self.w, "starts", "wide")
            member = self.member(0)
            return self.stages.run(WIDE_STAGE, out,
                                   lambda: make_wide_start(member, out))
        run_dir = os.path.join(self.w, "general_minilm")
        s = self.s
        config = _load("general_distill", teacher=self.teacher_pre, recipe="minilm_v2",
                       **self._smoke_student(),
                       relation_heads=RELATION_HEADS, steps=s.gd_steps, batch_size=s.batch_size,
                       log_every=1 if s.smoke else 50, checkpoint_every=100,
                       **{"teacher_dtype": "bfloat16", "optimizer.learning_rate": 3e-4,
                          "data.train": self.data["corpus"], "data.seq_len": s.seq_len,
                          **smoke_fields(s)})
        return self.stages.run(GD_STAGE,
                               os.path.join(run_dir, "student"), lambda: _run(config, run_dir))

    def _smoke_student(self):
        """--smoke: {"student": a tiny random narrow student's preset} (else the config's
        TinyBERT-4)."""
        if not self.s.smoke:
            return {}
        from examples.stdlib.proof_stages import tiny_student

        out = os.path.join(self.w, "tiny_student")
        return {"student": self.stages.run(SMOKE_STUDENT_STAGE, out,
                                           lambda: tiny_student(self.teacher_pre, out))}


def teachers_stage(s):
    return f"teachers ({s.members} members)"


def protocol_stages(s):
    """Names of every stage this protocol can run (a shared workdir may hold others' timings)."""
    from examples.stdlib.proof_stages import DATA_STAGES

    rows = [stage_name(start, key, seed) for start in STARTS for variant in VARIANTS
            for key in row_keys(s, variant) for seed in range(s.seeds)]
    return [*DATA_STAGES, "tiny random teacher", SMOKE_STUDENT_STAGE, teachers_stage(s), WIDE_STAGE,
            GD_STAGE, *rows]


def _run(config, workdir):
    from tinybert_tf.launch.modes import run

    return run(config, workdir)


def read_selection(path):
    """A stage's selection.json: its dev history and best evaluation."""
    with open(path) as f:
        return json.load(f)


# ---- rows -----------------------------------------------------------------------------------------


def stage_name(start, key, seed):
    return f"{start}_{key}_s{seed}"


def row_dir(w, start, key, seed):
    return os.path.join(w, "rows", stage_name(start, key, seed))


def model_dir(w, start, key, seed):
    """The row's selected (best-on-dev) model: finetune's `teacher`, or the prediction step's."""
    leaf = "teacher" if key == "a" else os.path.join("prediction", "student")
    return os.path.join(row_dir(w, start, key, seed), leaf)


def selection_path(w, start, key, seed):
    """The selection.json of the row's selected stage (finetune, or the prediction step)."""
    stage = "finetune" if key == "a" else "prediction"
    return os.path.join(row_dir(w, start, key, seed), stage, "selection.json")


def row_config(p, start, key, seed):
    """The config of one row (a | k1 | kE_T<t> | tE) from one start at one seed."""
    s, task = p.s, p.task_fields(seed)
    if key == "a":
        return _load("task_distill", mode="finetune", teacher=p.start(start),
                     **task, **{"finetune.learning_rate": s.student_lr})
    fields = {**task, "prediction.learning_rate": s.student_lr,
              "prediction.hard_weight": s.hard_weight, "prediction.combine": s.combine,
              "prediction.temperature": s.temperature,
              # rows sharing a teacher and data compute its logits once (launch/logits_cache.py)
              "prediction.logits_cache": os.path.join(p.w, "logits_cache")}
    if key == "k1":
        teacher, fields["stages"] = p.member(p.best_member()), "prediction"
    elif key.startswith("kE_T"):
        teacher, fields["stages"] = p.ensemble, "prediction"
        fields["prediction.temperature"] = float(key[len("kE_T"):])
    elif key == "tE":
        teacher, fields["stages"] = p.ensemble, "both"
        fields.update({"intermediate.teacher": 0, "intermediate.learning_rate": s.student_lr})
        if start == "narrow":  # as its general distillation: relations, no layer map
            fields.update({"intermediate.recipe": "minilm_v2",
                           "intermediate.relation_heads": RELATION_HEADS})
    else:
        raise ValueError(f"unknown row {key!r}; rows are a, k1, kE_T<temperature>, tE")
    return _load("task_distill", mode="task_distill", teacher=teacher, student=p.start(start),
                 transfer_file=p.data["transfer"], **fields)


def run_row(p, start, key, seed=0):
    """Train one row (resumable; skipped when its model exists); returns its model dir."""
    out = model_dir(p.w, start, key, seed)
    if os.path.exists(out):
        return p.stages.run(stage_name(start, key, seed), out, None)
    config = row_config(p, start, key, seed)
    return p.stages.run(stage_name(start, key, seed), out,
                        lambda: _run(config, row_dir(p.w, start, key, seed)))


def row_keys(s, variant):
    """The runs behind a variant at seed 0: (kE) is one per temperature of the sweep."""
    return [kE_key(t) for t in s.temperatures] if variant == "kE" else [variant]


def run_seeds(p, start, choice):
    """(a) and the start's best distilled row (`choice["best"]`, chosen on dev) at seeds
    1..seeds-1 (seed 0 is the row itself)."""
    for key in ("a", choice["best"]):
        for seed in seeds_of(p.s, key, choice)[1:]:
            run_row(p, start, key, seed)


def seeds_of(s, key, choice):
    """The seeds a row is reported over: all for (a) and the best distilled row, else [0]."""
    return list(range(s.seeds)) if key in ("a", choice.get("best")) else [0]
