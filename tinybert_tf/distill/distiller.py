"""`Distiller`: a keras.Model whose train_step runs a frozen teacher and a student and sums a recipe's losses.

The loss arithmetic lives in one backend-neutral method, `compute_terms`, a loop over the recipe's
terms calling `terms.FUNCTIONS` (what each term needs is `recipes.NEEDS`), like `keras.distillation`
puts it in `compute_loss`. `train_step`/`test_step` are thin per-backend wrappers around it, picked
once by backend as Keras picks its trainer: `tf_step` (TensorFlow) or `jax_step` (JAX).
"""

from __future__ import annotations

import dataclasses
import importlib

import keras
from keras import ops
from keras.saving import deserialize_keras_object, serialize_keras_object

from tinybert_tf.distill import dtypes, recipes
from tinybert_tf.distill import features as feature_view
from tinybert_tf.distill import terms as terms_lib

# Keras backend -> the module with its `train_step`, `test_step` and `num_replicas` (imported on
# first use: the JAX one imports jax).
_STEPS = {"tensorflow": "tinybert_tf.distill.tf_step", "jax": "tinybert_tf.distill.jax_step"}


def step_module(backend=None):
    """The step module of `backend` (default: Keras' backend); a one-line error for others."""
    backend = backend or keras.backend.backend()
    if backend not in _STEPS:
        raise ValueError(f"The Distiller has no train step for the Keras backend {backend!r}; "
                         f"use KERAS_BACKEND={' or '.join(_STEPS)}.")
    return importlib.import_module(_STEPS[backend])


CACHED_LOGITS = "teacher_logits"  # optional key of `x`: the teacher's logits for the example


def _model_inputs(x):
    return {k: v for k, v in x.items() if k != CACHED_LOGITS} if CACHED_LOGITS in x else x


@dataclasses.dataclass(frozen=True)
class Shape:
    """What `check_fit` reads of a teacher or a student: its transformer layers, attention heads,
    attention widths `(query/key, value)` (heads * head size) and whether it has a task head."""

    layers: int
    heads: int
    widths: tuple[int, int]
    head: bool

    @classmethod
    def of(cls, model):
        """The shape of a keras-hub encoder backbone or a task model wrapping one."""
        return cls(feature_view.num_layers(model), feature_view.num_heads(model),
                   feature_view.attention_widths(model),
                   feature_view.backbone_of(model) is not model)

    @classmethod
    def from_config(cls, config, head):
        """The shape of a keras-hub encoder from its backbone config (`num_layers`, `num_heads`,
        `hidden_dim`: each head `hidden_dim // num_heads` wide, as keras-hub's encoders build it);
        None when the config lacks one of them."""
        sizes = [config.get(k) for k in ("num_layers", "num_heads", "hidden_dim")]
        if not all(isinstance(v, int) and v > 0 for v in sizes):
            return None
        layers, heads, hidden = sizes
        width = heads * (hidden // heads)
        return cls(layers, heads, (width, width), bool(head))


def check_fit(recipe, teacher, student):
    """The teacher layer (0-based) of each student layer for `recipe` (a `Recipe` or its name)
    distilling `teacher` into `student` (`Shape`s): `recipes.resolve_layer_map`, or `()` when no
    term maps layers. A ValueError naming the fix when the recipe cannot pair them: a layer map
    that does not fit, a task head a term needs, MiniLM's layer or head counts, relation heads
    that do not divide the attention widths. The Distiller runs it; the launcher runs it on
    the sizes in the presets' configs before a run starts (`Shape.from_config`)."""
    recipe = recipes.get(recipe)
    # Only recipes with layer-wise terms map layers (a prediction-only or MiniLM step with a
    # 4-layer student of a 6-layer teacher must not fail on the uniform default).
    layer_map = (recipes.resolve_layer_map(recipe.layer_map, teacher.layers, student.layers)
                 if recipe.needs_layer_map else ())
    _check_heads(recipe, teacher, student)
    _check_same_heads(recipe, teacher, student)
    _check_relations(recipe, teacher, student)
    return layer_map


def _check_same_heads(r, teacher, student):
    same = list(r.terms_needing("same_heads"))
    if same and teacher.heads != student.heads:
        raise ValueError(
            f"Recipe {r.name!r} uses {same}, which need equal attention-head counts (teacher "
            f"{teacher.heads}, student {student.heads}); give the student {teacher.heads} heads, "
            "or use recipe 'minilm_v2' (any head counts).")


def _check_heads(recipe, teacher, student):
    # Terms that need a teacher head need a student head too (`recipes.NEEDS`).
    paired = recipe.terms_needing("teacher_head")
    for role, shape in (("teacher", teacher), ("student", student)):
        if paired and not shape.head:
            raise ValueError(
                f"Recipe {recipe.name!r} uses {list(paired)} but the {role} is a bare "
                "backbone; give it a task head (e.g. keras_hub.models.BertTextClassifier)."
            )
    alone = [t for t in recipe.terms_needing("student_head") if t not in paired]
    if alone and not student.head:
        raise ValueError(f"The {alone[0]!r} term needs a student with a task head.")


def _check_relations(r, teacher, student):
    if not r.needs_relations:
        return
    if not -teacher.layers <= r.teacher_layer < teacher.layers:
        raise ValueError(f"teacher_layer={r.teacher_layer} is out of range for a "
                         f"{teacher.layers}-layer teacher; use 0..{teacher.layers - 1} or -1 "
                         "(the last layer).")
    if r.terms_needing("relation_heads"):
        widths = {f"{role} {kind}": w for role, shape in (("teacher", teacher),
                                                          ("student", student))
                  for kind, w in zip(("q/k", "v"), shape.widths)}
        bad = {k: w for k, w in widths.items() if w % r.relation_heads}
        if bad:
            raise ValueError(f"relation_heads={r.relation_heads} must divide the attention "
                             f"widths (heads * head size) {bad}; choose a common divisor.")


class Distiller(keras.Model):
    """Distil `teacher` into `student` with `recipe` (a `recipes.Recipe` or its name).

    teacher, student: keras-hub encoder backbones (e.g. `BertBackbone`) or task models wrapping one
    (`BertTextClassifier`, `BertMaskedLM`, `tinybert_tf.distill.heads.TokenClassifier`).
    Data: `x` is keras-hub's `{"token_ids", "segment_ids", "padding_mask"}` (plus `"mask_positions"`
    for masked-LM recipes); `y`/`sample_weight` are task labels/weights, or keras-hub's masked-LM
    `mask_ids`/`mask_weights`. Every term is a tracked metric named `<term>_loss`, plus `loss`.
    """

    def __init__(self, teacher, student, recipe, name="distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        self.recipe = recipes.get(recipe)
        self._step_module = step_module()
        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        self.layer_map = check_fit(self.recipe, Shape.of(teacher), Shape.of(student))
        # The teacher runs only as deep as the recipe's terms read it (its upper layers' matmuls
        # are skipped); `teacher_layer` resolved to a 0-based index into the shorter lists.
        t_layers = feature_view.num_layers(teacher)
        self.teacher_depth = self.recipe.teacher_depth(self.layer_map, t_layers)
        self.teacher_layer = self.recipe.teacher_layer % t_layers
        t_dim, s_dim = feature_view.hidden_dim(teacher), feature_view.hidden_dim(student)
        # Student -> teacher width projections (TinyBERT's W_h); built here so that they are created
        # under the strategy scope the Distiller is constructed in.
        self.projections = []
        if self.recipe.needs_projection and t_dim != s_dim:
            count = 1 if self.recipe.share_projection else feature_view.num_layers(student) + 1
            for i in range(count):
                proj = keras.layers.Dense(t_dim, name=f"projection_{i}")
                proj.build((None, None, s_dim))
                self.projections.append(proj)
        self.trackers = {
            term: keras.metrics.Mean(name=f"{term}_loss") for term in self.recipe.terms
        }
        self.trackers["loss"] = keras.metrics.Mean(name="loss")
        self._replica_clipnorm = None  # set by `compile`
        self.built = True

    def get_config(self):
        """The Distiller's constructor arguments: the teacher and student serialised with
        `keras.saving.serialize_keras_object`, the recipe as `recipes.recipe_config` (its name, or
        its fields when it is not a registered recipe) and the name. The weights are not in it."""
        config = super().get_config()
        config.update({
            "teacher": serialize_keras_object(self.teacher),
            "student": serialize_keras_object(self.student),
            "recipe": recipes.recipe_config(self.recipe),
        })
        return config

    @classmethod
    def from_config(cls, config):
        """A Distiller (newly initialised weights) from `get_config`'s dict."""
        config = dict(config)
        for role in ("teacher", "student"):
            config[role] = deserialize_keras_object(config[role])
        config["recipe"] = recipes.from_recipe_config(config["recipe"])
        return cls(**config)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    # ---- features -------------------------------------------------------------------------------

    def _model_features(self, model, x, training, depth=None):
        feats = feature_view.encoder_features(model, x, training=training, depth=depth)
        if self.recipe.needs_logits and feature_view.backbone_of(model) is not model:
            head_inputs = x
            if hasattr(model, "masked_lm_head") and self.recipe.kd_positions == "all":
                batch, seq = ops.shape(x["token_ids"])[0], ops.shape(x["token_ids"])[1]
                every = ops.broadcast_to(ops.arange(seq, dtype="int32")[None, :], (batch, seq))
                head_inputs = dict(x, mask_positions=every)
            feats["logits"] = feature_view.head_logits(model, feats, head_inputs, training)
        return feats

    def teacher_features(self, x):
        """Teacher feature view in inference mode, with gradients stopped."""
        feats = self._model_features(self.teacher, _model_inputs(x), training=False,
                                     depth=self.teacher_depth)
        return keras.tree.map_structure(ops.stop_gradient, feats)

    def student_features(self, x, training=True):
        return self._model_features(self.student, _model_inputs(x), training=training)

    # ---- the loss arithmetic (backend-neutral) ----------------------------------------------------

    def compute_terms(self, x, y, sample_weight, t_feats, s_feats):
        """Loss terms from the teacher's and student's feature views (`t_feats`, `s_feats`: dicts
        of `features.encoder_features`, plus `logits`); returns `{term: scalar}` plus the
        weighted `loss`. Each term is a mean over the local batch (the steps divide by the
        replica count for gradients)."""
        r = self.recipe
        inputs = terms_lib.TermInputs(self.pairing, x, y, sample_weight, t_feats, s_feats)
        terms = {name: fn(inputs) for name, fn in terms_lib.FUNCTIONS.items() if name in r.weights}
        total = 0.0
        for name, value in terms.items():
            total = total + r.weights[name] * value
        terms["loss"] = total
        return terms

    @property
    def pairing(self):
        """What the loss terms read of this teacher/student pair: a `terms.Pairing` of the
        recipe, layer map, projections, MiniLM's teacher layer and the student's head count and
        kind."""
        return terms_lib.Pairing(
            self.recipe, self.layer_map, self.projections, self.teacher_layer,
            feature_view.num_heads(self.student), hasattr(self.student, "masked_lm_head"))

    def update_metrics(self, terms):
        """Adds a step's loss terms to the `<term>_loss` trackers (stateful; the JAX step
        updates `trackers` statelessly instead).

        Args:
            terms: `compute_terms`' dict, `{term: scalar}` plus `loss`.

        Returns:
            The logs: `{tracker name: running mean}` for every tracker.
        """
        for name, value in terms.items():
            self.trackers[name].update_state(value)
        return {tracker.name: tracker.result() for tracker in self.trackers.values()}

    # ---- what the per-backend steps (`tf_step`, `jax_step`) read ------------------------------

    def teacher_outputs(self, x):
        """The teacher's side of a step, gradients stopped.

        Args:
            x: the batch's inputs (may carry `CACHED_LOGITS`).

        Returns:
            `teacher_features(x)`; or `{"logits": x[CACHED_LOGITS]}` when the batch carries
            cached teacher logits and no term reads the teacher's layers; or `{}` when no term
            reads the teacher at all (the teacher does not run).
        """
        # The finetune recipe has no teacher term: skip the teacher forward entirely.
        if not self.recipe.needs_teacher:
            return {}
        # Logits cached once per example (modes: prediction.cache_teacher_logits) replace the
        # frozen teacher's forward pass when no term needs its layers.
        if CACHED_LOGITS in x and not self.recipe.needs_teacher_layers:
            return {"logits": ops.stop_gradient(x[CACHED_LOGITS])}
        return self.teacher_features(x)

    @property
    def replica_clipnorm(self):
        """The optimizer's `global_clipnorm` when the step clips the gradients summed across
        several replicas itself (`compile` then takes it off the optimizer); None otherwise.

        Returns:
            A float, or None (one replica, no clipping, or not compiled yet).
        """
        return self._replica_clipnorm

    def compile(self, *args, **kwargs):
        dtypes.check_trainable(self)  # student, head and projections: float32 variables
        super().compile(*args, **kwargs)
        # Keras clips each replica's partial gradient before the cross-replica sum, which is not
        # the clipping one device does. With several replicas the step clips the summed gradient
        # (`tf_step.clip_across_replicas`) instead.
        # (Under loss scaling, the inner optimizer's clipnorm: the step scales it with the loss.)
        self._replica_clipnorm = None
        opt = self.optimizer
        if isinstance(opt, keras.optimizers.LossScaleOptimizer):
            opt = opt.inner_optimizer
        replicas = self._step_module.num_replicas()
        if opt is not None and getattr(opt, "global_clipnorm", None) and replicas > 1:
            self._replica_clipnorm = float(opt.global_clipnorm)
            opt.global_clipnorm = None

    def train_step(self, *args):
        # TensorFlow: train_step(data); Keras' JAX trainer: train_step(state, data).
        return self._step_module.train_step(self, *args)

    def test_step(self, *args):
        return self._step_module.test_step(self, *args)
