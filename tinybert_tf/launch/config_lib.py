"""Shared pieces of the ml_collections configs in tinybert_tf/configs/ (each config file is a
function), and how `--config` finds a config file (`resolve_path`, `load`)."""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from tinybert_tf.distill import recipes
from tinybert_tf.errors import LaunchError


def base(mode):
    """Fields every mode reads (a field nothing reads is a bug: tests/test_launch_config_lib.py
    runs each config's modes and names any leaf no mode read). `optimizer.learning_rate` is
    general distillation's; task configs delete it (each stage has its own rate)."""
    config = ml_collections.ConfigDict()
    config.mode = mode
    config.teacher = ""  # keras-hub preset name or preset directory (HF BERT dirs load too)
    config.student_dropout = 0.1  # dropout rate of every student layer (0 for exact replica parity)
    config.seed = 0
    config.deterministic = False  # tf.config.experimental.enable_op_determinism()
    config.overwrite = False  # allow reusing a workdir that holds a run with another config
    # Keras backend: tensorflow | jax (or KERAS_BACKEND=jax with this default); fixed per process,
    # set by tinybert_tf.main before Keras is imported; config.json records the one that ran.
    config.backend = "tensorflow"
    # auto: the TPU, else every local GPU, else the CPU (JAX: every local device, every process of
    # a cluster); or by name: cpu | one_device | mirrored | multi_worker | tpu (TF); cpu |
    # one_device | data_parallel (JAX). The choice is printed in one line (launch.devices).
    config.strategy = "auto"
    config.tpu = ""  # TPU name, grpc:// address, or "local" on a TPU VM
    # Multi-process data parallelism (backend jax, strategy data_parallel; jax.distributed):
    # coordinator_address is HOST:PORT of process 0, the same on every process ("auto" on a
    # Cloud TPU VM: jax finds the hosts); num_processes the processes in the run; process_id this
    # process's index (0 = the chief, which writes the workdir's files). One process: leave them.
    config.coordinator_address = ""
    config.num_processes = 1
    config.process_id = 0
    # auto | float32 | mixed_bfloat16 | mixed_float16. auto: mixed_bfloat16 where the hardware
    # computes bf16 natively (avx512_bf16/amx_bf16 CPUs, TPU, NVIDIA cc >= 8.0), else float32;
    # float32 beside auto's int8 teacher (distillation on AMX CPUs).
    config.precision = "auto"
    # Frozen teacher's dtype policy: auto (bfloat16 where native, else the precision's), "" (the
    # precision's), e.g. "bfloat16" (fastest measured step on a bf16 CPU, features ~1-2 % off), or
    # "int8" (float32 with int8 kernels, Keras' quantize; needs XLA on CPU; auto's choice for
    # distillation on AMX CPUs, where it measured fastest).
    config.teacher_dtype = "auto"
    # auto | True | False | fusible (XLA clusters of element-wise ops, matmuls on oneDNN). auto:
    # XLA where it measured faster (fp32 CPU, TPU, GPU), fusible for a bf16 CPU step.
    config.jit_compile = "auto"
    config.steps_per_execution = 1
    config.batch_size = 32  # global batch, split across replicas
    config.log_every = 100
    config.checkpoint_every = 1000
    config.keep_checkpoints = 3
    # A warning when the loss stays flat (within 1 %) over the first N logs (0 = no check).
    config.stall_intervals = 5
    config.optimizer = ml_collections.ConfigDict(
        dict(name="adamw", learning_rate=1e-4, weight_decay=0.01, warmup_fraction=0.1,
             clipnorm=1.0)
    )
    return config


def tiny(config):
    """Shrink a config for tests and CI: few steps, small batches, frequent logs, and the same
    run on every machine: one CPU device, float32, no XLA (set strategy="auto" to try the
    devices' choice with it)."""
    config.batch_size = 4
    config.strategy = "cpu"
    # The same on every CPU:
    config.precision, config.teacher_dtype, config.jit_compile = "float32", "", "False"
    config.log_every = 2
    config.checkpoint_every = 4
    return config


def task_fields(config):
    """Task data: a TASKS name (GLUE via TFDS, conll2003) or task='file' with local files."""
    config.task = "sst2"
    config.data = ml_collections.ConfigDict(
        dict(seq_len=64, tfds_data_dir="", train_file="", eval_file="", test_file="",
             text_column="text", text_b_column="", label_column="label", regression=False,
             buckets="16,32,64,128,256", skip_bad_rows=False, tsv_quoting="none", format="",
             metric="", positive_label="")
    )  # buckets: batch rows of similar length, padded to the smallest bucket that holds them
    #   ("" = every batch padded to seq_len; strategy=tpu always uses seq_len alone: one shape)
    # skip_bad_rows: a malformed row of a task / transfer file (field count, quoting, bad JSONL
    #   line) is skipped and counted instead of stopping with its file:line (data.task_files).
    # tsv_quoting: .tsv files are none (plain tab-separated, quotes are text: GLUE) | csv (quoted)
    # format: "" (task files by extension: .tsv / .csv / .jsonl) | conll (token per line, tags in
    #   the label_column-th column, an index, default the last: token classification, entity_f1)
    # metric: what the eval split selects on and the report leads with ("" = the task's own):
    #   accuracy | macro_f1 | f1 | matthews_corr (classification), pearson | spearman
    #   (regression), entity_f1 (token tasks); f1 is binary F1 of the class positive_label names.
    # Model selection on the task's first eval split: every eval_every steps (0 = once per epoch,
    # -1 = off: the last model is the output). The test split is never used to select.
    config.eval_every = 0
    return config


# (epochs, patience) of a task stage whose config leaves them None. GLUE / CoNLL keep the TinyBERT
# paper's fixed schedules (teacher fine-tuning: BERT's 3 epochs). Local file tasks have no
# published schedule: up to 10 epochs, stopped 3 evaluations after the eval score last improved,
# so every model in a comparison trains until its dev curve has peaked.
PAPER_BUDGETS = {"finetune": (3, 0), "intermediate": (10, 0), "prediction": (3, 0)}
FILE_BUDGETS = {"finetune": (10, 3), "intermediate": (10, 3), "prediction": (10, 3)}


def stages(config):
    """The training stages of a task-mode config, in order: finetune's one, or task_distill's
    `stages` (intermediate | prediction | both); another `stages` value is a one-line error."""
    if config.mode == "finetune":
        return ["finetune"]
    found = {"intermediate": ["intermediate"], "prediction": ["prediction"],
             "both": ["intermediate", "prediction"]}.get(config.stages)
    if found is None:
        raise LaunchError("stages must be intermediate, prediction or both; got "
                          f"{config.stages!r}.")
    return found


def stage_budget(config, stage):
    """(epochs, patience) of `stage` (finetune | intermediate | prediction) for `config`."""
    epochs, patience = (FILE_BUDGETS if config.task == "file" else PAPER_BUDGETS)[stage]
    settings = config[stage]
    return (epochs if settings.epochs is None else int(settings.epochs),
            patience if settings.patience is None else int(settings.patience))


# Keys a config file removes from `base`, with the fix the launcher prints when one is set anyway.
REMOVED_KEYS = {
    "optimizer.learning_rate": "task modes set each stage's own rate: "
    "--config.finetune.learning_rate, --config.intermediate.learning_rate, "
    "--config.prediction.learning_rate.",
}


def remove_key(config, key):
    """Delete `key` (a `REMOVED_KEYS` name, dotted) from `config`: setting it later is the
    one-line error `removed_key_fix` words."""
    *parents, last = key.split(".")
    target = config
    for name in parents:
        target = target[name]
    del target[last]


def removed_key_fix(error_text, command_line):
    """(key, fix) when a flag parsing error (`error_text`) is an override of a `REMOVED_KEYS`
    key that `command_line` sets; else None."""
    for key, fix in REMOVED_KEYS.items():
        parent, _, last = key.rpartition(".")
        if last in error_text and parent in command_line:
            return key, fix
    return None


# ---- recipes: the config's recipe strings -> a `recipes.Recipe` ----------------------------------

def make_recipe(name, layer_map="", loss_weights="", **overrides):
    """A recipe with the config's layer map ("" keeps the recipe's, else uniform | last | 1,2,4,5)
    and loss weights ("term=weight,..." replaces or adds terms; weight 0 drops a term)."""
    if layer_map in ("uniform", "last"):
        overrides["layer_map"] = layer_map
    elif layer_map:
        overrides["layer_map"] = tuple(int(i) for i in str(layer_map).split(","))
    weights = dict(overrides.pop("weights", None) or recipes.get(name).weights)
    if loss_weights:
        for item in str(loss_weights).split(","):
            term, _, value = item.partition("=")  # no "=" leaves value "", which float() refuses
            try:
                weights[term.strip()] = float(value)
            except ValueError:
                raise LaunchError(f"loss_weights item {item!r} is not term=number, e.g. "
                                  "'att=0.5,pooled_rel=10'.") from None
    overrides["weights"] = {t: w for t, w in weights.items() if w != 0}
    try:
        return recipes.get(name, **overrides)
    except ValueError as err:
        raise LaunchError(str(err)) from None


def _relation_kwargs(relation_heads, teacher_layer=-1):
    """Recipe overrides for a config's `relation_heads` (0 keeps the recipe's) and MiniLM's
    `teacher_layer` (-1, the last, is the recipe's)."""
    out = {"relation_heads": int(relation_heads)} if relation_heads else {}
    return {**out, "teacher_layer": int(teacher_layer)} if int(teacher_layer) != -1 else out


def config_recipe(config, stage="general", regression=False):
    """The recipe a step of `config` trains with: general distillation's (`recipe`, `layer_map`,
    `loss_weights`, `relation_heads`, `teacher_layer`), task distillation's `intermediate` step
    (its `recipe` and `relation_heads`, the config's `layer_map`) or its `prediction` step (soft targets at
    `prediction.temperature` plus `prediction.hard_weight` x the labels; MSE when `regression`)."""
    if stage == "general":
        return make_recipe(config.recipe, config.layer_map, config.loss_weights,
                           **_relation_kwargs(config.relation_heads, config.teacher_layer))
    if stage == "intermediate":
        return make_recipe(config.intermediate.recipe, config.layer_map,
                           **_relation_kwargs(config.intermediate.relation_heads))
    p = config.prediction
    return make_recipe("tinybert_task_prediction", regression=regression,
                       temperature=p.temperature,
                       weights={"pred": 1.0, "hard": float(p.hard_weight)})


def masked_lm(recipe):
    """Does general distillation with `recipe` train masked-LM models (teacher and student with
    their LM heads)? Yes when a term reads the LM's logits or its labels (`kd`, `mlm`)."""
    return "mlm" in recipe.weights or "kd" in recipe.weights


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def packaged_names():
    """The configs that ship with the package (tinybert_tf/configs/NAME.py), by bare name."""
    return sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and f[0] != "_")


def resolve_path(spec):
    """What `--config=SPEC` names -> (config file, variant or None). SPEC is NAME[:variant] (a
    packaged config: `task_distill:tiny`) or PATH[:variant] (any config file). `configs/NAME.py`
    (or `NAME.py`) that does not exist from the working directory is the packaged NAME, so
    command lines written that way run from any directory."""
    path, colon, variant = spec.partition(":")
    if os.path.isfile(path):
        return path, (variant if colon else None)
    folder, file = os.path.split(os.path.normpath(path))
    name = file.removesuffix(".py")
    if folder in ("", "configs") and name in packaged_names():
        return os.path.join(CONFIG_DIR, f"{name}.py"), (variant if colon else None)
    raise LaunchError(f"no config file {path} and no packaged config named {name}; use one of "
                      f"{', '.join(packaged_names())} (e.g. --config=task_distill:tiny) or the "
                      "path of your own config .py file.")


def load(name, variant=None, **overrides):
    """The config `name` names (as `--config` does: `task_distill`, `general_distill:tiny`, a
    .py path) from its get_config(variant) (`variant` given here wins over a `:variant` in
    `name`), with dotted overrides, e.g. `load("task_distill", "tiny", **{"data.seq_len": 32})`
    (what `--config.data.seq_len=32` does)."""
    path, named = resolve_path(name)
    spec = importlib.util.spec_from_file_location(os.path.basename(path).removesuffix(".py"),
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(named if variant is None else variant)
    config.lock()  # an override of a key the config does not have is an error, not a new field
    for key, value in overrides.items():
        target = config
        *parents, last = key.split(".")
        for p in parents:
            target = target[p]
        target[last] = value
    return config
