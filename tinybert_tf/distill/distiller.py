"""`Distiller`: a keras.Model whose train_step runs a frozen teacher and a student and sums a recipe's losses.

The loss arithmetic lives in one backend-neutral method, `compute_terms`, written in `keras.ops`
(like `keras.distillation` puts it in `compute_loss`); `train_step` is a thin TensorFlow wrapper
around it (teacher forward outside the gradient tape, student forward inside).
"""

from __future__ import annotations

import os

import keras
from keras import ops

from tinybert_tf.distill import features as feature_view
from tinybert_tf.distill import losses, optim, recipes


def num_replicas():
    """Replicas that each see a slice of the global batch (TF distribution strategies)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.distribute.get_strategy().num_replicas_in_sync
    return 1


CACHED_LOGITS = "teacher_logits"  # optional key of `x`: the teacher's logits for the example


def _model_inputs(x):
    return {k: v for k, v in x.items() if k != CACHED_LOGITS} if CACHED_LOGITS in x else x


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
        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        t_layers, s_layers = feature_view.num_layers(teacher), feature_view.num_layers(student)
        # Only recipes with layer-wise terms map layers (a prediction-only or MiniLM step with a
        # 4-layer student of a 6-layer teacher must not fail on the uniform default).
        self.layer_map = (
            recipes.resolve_layer_map(self.recipe.layer_map, t_layers, s_layers)
            if self.recipe.needs_layer_map else ()
        )
        self._check_heads()
        self._check_relations(t_layers)
        t_dim, s_dim = feature_view.hidden_dim(teacher), feature_view.hidden_dim(student)
        # Student -> teacher width projections (TinyBERT's W_h); built here so that they are created
        # under the strategy scope the Distiller is constructed in.
        self.projections = []
        if self.recipe.needs_projection and t_dim != s_dim:
            count = 1 if self.recipe.share_projection else s_layers + 1
            for i in range(count):
                proj = keras.layers.Dense(t_dim, name=f"projection_{i}")
                proj.build((None, None, s_dim))
                self.projections.append(proj)
        self.trackers = {
            term: keras.metrics.Mean(name=f"{term}_loss") for term in self.recipe.terms
        }
        self.trackers["loss"] = keras.metrics.Mean(name="loss")
        self.built = True

    def _check_heads(self):
        needs = [t for t in ("pred", "kd", "mlm") if t in self.recipe.weights]
        for role, model in (("teacher", self.teacher), ("student", self.student)):
            if needs and feature_view.backbone_of(model) is model:
                raise ValueError(
                    f"Recipe {self.recipe.name!r} uses {needs} but the {role} is a bare backbone; "
                    "give it a task head (e.g. keras_hub.models.BertTextClassifier)."
                )
        if "hard" in self.recipe.weights and feature_view.backbone_of(self.student) is self.student:
            raise ValueError("The 'hard' term needs a student with a task head.")

    def _check_relations(self, t_layers):
        r = self.recipe
        if not r.needs_relations:
            return
        if not -t_layers <= r.teacher_layer < t_layers:
            raise ValueError(f"teacher_layer={r.teacher_layer} is out of range for a {t_layers}-layer "
                             f"teacher; use 0..{t_layers - 1} or -1 (the last layer).")
        same = [t for t in recipes.SAME_HEADS_TERMS if t in r.weights]
        t_heads, s_heads = feature_view.num_heads(self.teacher), feature_view.num_heads(self.student)
        if same and t_heads != s_heads:
            raise ValueError(
                f"Recipe {r.name!r} uses {same}, which need equal attention-head counts (teacher "
                f"{t_heads}, student {s_heads}); use recipe 'minilm_v2' (any head counts).")
        if any(t in r.weights for t in ("qq", "kk", "vv")):
            widths = {f"{role} {kind}": w for role, model in (("teacher", self.teacher),
                                                              ("student", self.student))
                      for kind, w in zip(("q/k", "v"), feature_view.attention_widths(model))}
            bad = {k: w for k, w in widths.items() if w % r.relation_heads}
            if bad:
                raise ValueError(f"relation_heads={r.relation_heads} must divide the attention "
                                 f"widths (heads * head size) {bad}; choose a common divisor.")

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    # ---- features -------------------------------------------------------------------------------

    def _model_features(self, model, x, training):
        feats = feature_view.encoder_features(model, x, training=training)
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
        feats = self._model_features(self.teacher, _model_inputs(x), training=False)
        return keras.tree.map_structure(ops.stop_gradient, feats)

    def student_features(self, x, training=True):
        return self._model_features(self.student, _model_inputs(x), training=training)

    def _project(self, index, hidden):
        if not self.projections:
            return hidden
        return self.projections[0 if len(self.projections) == 1 else index](hidden)

    # ---- the loss arithmetic (backend-neutral) ----------------------------------------------------

    def compute_terms(self, x, y, sample_weight, teacher, student):
        """Loss terms from the two feature views; returns `{term: scalar}` plus the weighted `loss`.

        Each term is a mean over the local batch (divide by `num_replicas()` for gradients).
        """
        r = self.recipe
        mask = x["padding_mask"]
        hidden_mask = mask if r.hidden_mask else None
        terms = {}
        if "emb" in r.weights:
            emb = self._project(0, student["embeddings"])
            terms["emb"] = losses.hidden_mse(emb, teacher["embeddings"], hidden_mask)
        if "att" in r.weights:
            terms["att"] = 0.0
            for s_i, t_i in enumerate(self.layer_map):
                if r.attention == "mse":
                    term = losses.attention_mse(
                        student["attention_scores"][s_i], teacher["attention_scores"][t_i], mask
                    )
                else:
                    term = losses.attention_kl(
                        student["attention_probs"][s_i], teacher["attention_probs"][t_i], mask
                    )
                terms["att"] = terms["att"] + term
        if "hidden" in r.weights:
            terms["hidden"] = 0.0
            for s_i, t_i in enumerate(self.layer_map):
                hidden = self._project(s_i + 1, student["hidden_states"][s_i])
                terms["hidden"] = terms["hidden"] + losses.hidden_mse(
                    hidden, teacher["hidden_states"][t_i], hidden_mask
                )
        if any(t in r.weights for t in recipes.SENTENCE_TERMS):
            last = self._project(len(self.layer_map), student["sequence_output"])
            t_last = teacher["sequence_output"]
            if "cos" in r.weights:
                terms["cos"] = losses.cosine_hidden(last, t_last, mask)
            if "pooled_cos" in r.weights:
                terms["pooled_cos"] = losses.pooled_cosine(last, t_last, mask)
            if "pooled_rel" in r.weights:
                terms["pooled_rel"] = losses.pooled_similarity_kl(
                    last, t_last, mask, r.similarity_temperature)
        if r.needs_relations:
            terms.update(self._relation_terms(teacher, student, mask))
        s_logits = student.get("logits")
        t_logits = teacher.get("logits")
        is_mlm = hasattr(self.student, "masked_lm_head")
        # Token-level heads ([B, S, C] logits): average soft targets over the labelled tokens
        # (sample_weight [B, S]), or over real tokens when the data carries no weights.
        token_weights = None
        if not is_mlm and s_logits is not None and len(s_logits.shape) == 3:
            token_weights = sample_weight if sample_weight is not None else mask
        if "pred" in r.weights:
            if r.regression:
                terms["pred"] = losses.logits_mse(s_logits, t_logits)
            else:
                terms["pred"] = losses.soft_cross_entropy(
                    s_logits, t_logits, r.temperature, token_weights
                )
        if "kd" in r.weights:
            if is_mlm:
                weights = mask if r.kd_positions == "all" else sample_weight
            else:
                weights = token_weights
            terms["kd"] = losses.kl_divergence(s_logits, t_logits, r.temperature, weights)
        if "mlm" in r.weights:
            mlm_logits = s_logits
            if r.kd_positions == "all":
                positions = ops.cast(x["mask_positions"], "int32")[:, :, None]
                mlm_logits = ops.take_along_axis(s_logits, positions, axis=1)
            terms["mlm"] = losses.masked_lm_loss(mlm_logits, y, sample_weight)
        if "hard" in r.weights:
            if r.regression:
                terms["hard"] = losses.logits_mse(s_logits[..., 0], y, sample_weight)
            else:
                terms["hard"] = losses.sparse_cross_entropy(s_logits, y, sample_weight)
        total = 0.0
        for name, value in terms.items():
            total = total + r.weights[name] * value
        terms["loss"] = total
        return terms

    def _relation_terms(self, teacher, student, mask):
        """MiniLM terms: teacher layer `recipe.teacher_layer` -> the student's last layer."""
        r, t_i, terms = self.recipe, self.recipe.teacher_layer, {}
        if "minilm_att" in r.weights:
            terms["minilm_att"] = losses.attention_kl(
                student["attention_probs"][-1], teacher["attention_probs"][t_i], mask)
        if "minilm_val" in r.weights:
            terms["minilm_val"] = losses.relation_kl(
                student["values"][-1], teacher["values"][t_i], mask,
                feature_view.num_heads(self.student))
        for term, key in (("qq", "queries"), ("kk", "keys"), ("vv", "values")):
            if term in r.weights:
                terms[term] = losses.relation_kl(
                    student[key][-1], teacher[key][t_i], mask, r.relation_heads)
        return terms

    def _update_trackers(self, terms):
        for name, value in terms.items():
            self.trackers[name].update_state(value)
        return {tracker.name: tracker.result() for tracker in self.trackers.values()}

    # ---- TensorFlow steps --------------------------------------------------------------------------

    def _teacher_or_empty(self, x):
        # The finetune recipe has no teacher term: skip the teacher forward entirely.
        if not set(self.recipe.weights) - {"hard"}:
            return {}
        # Logits cached once per example (modes: prediction.cache_teacher_logits) replace the
        # frozen teacher's forward pass when no term needs its layers.
        if CACHED_LOGITS in x and not self.recipe.needs_intermediate:
            return {"logits": ops.stop_gradient(x[CACHED_LOGITS])}
        return self.teacher_features(x)

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        # Keras clips each replica's partial gradient before the cross-replica sum, which is not
        # the clipping one device does. With several replicas we clip the summed gradient here.
        self._replica_clipnorm = None
        opt = self.optimizer
        if (opt is not None and getattr(opt, "global_clipnorm", None) and num_replicas() > 1
                and not isinstance(opt, keras.optimizers.LossScaleOptimizer)):
            self._replica_clipnorm = float(opt.global_clipnorm)
            opt.global_clipnorm = None

    def _clip_across_replicas(self, grads):
        import tensorflow as tf

        total = tf.distribute.get_replica_context().all_reduce("sum", grads)
        norm = tf.linalg.global_norm(total)
        scale = tf.minimum(1.0, self._replica_clipnorm / tf.maximum(norm, 1e-12))
        return [g * tf.cast(scale, g.dtype) for g in grads]

    def train_step(self, *args):
        if keras.backend.backend() == "jax":  # Keras' JAX trainer calls train_step(state, data)
            from tinybert_tf.distill import jax_step

            return jax_step.train_step(self, *args)
        (data,) = args
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teacher = self._teacher_or_empty(x)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            student = self.student_features(x, training=True)
            terms = self.compute_terms(x, y, sample_weight, teacher, student)
            loss = self.optimizer.scale_loss(terms["loss"] / num_replicas())
        grads = tape.gradient(loss, variables)
        # Variables no term reaches (e.g. the pooler under intermediate-layer terms) keep still.
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        grads, variables = optim.densify([g for g, _ in pairs]), [v for _, v in pairs]
        if getattr(self, "_replica_clipnorm", None):
            grads = self._clip_across_replicas(grads)
        self.optimizer.apply(grads, variables)
        return self._update_trackers(terms)

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            from tinybert_tf.distill import jax_step

            return jax_step.test_step(self, *args)
        (data,) = args
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teacher = self._teacher_or_empty(x)
        student = self.student_features(x, training=False)
        return self._update_trackers(self.compute_terms(x, y, sample_weight, teacher, student))

    # ---- saving -----------------------------------------------------------------------------------

    def save_projections(self, path):
        """Write the student->teacher projections (distillation-only layers) to an .npz file."""
        import numpy as np

        arrays = {f"{p.name}/{w.name}": w.numpy() for p in self.projections for w in p.weights}
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        return path

    def load_projections(self, path):
        import numpy as np

        with np.load(path) as data:
            for p in self.projections:
                p.set_weights([data[f"{p.name}/{w.name}"] for w in p.weights])

    # ---- saving -----------------------------------------------------------------------------------

    def save_student(self, path, tokenizer=None):
        """Write the student (with its task head, if any) and tokenizer as a keras-hub preset dir.

        `from_preset(path)` reloads it. Only the student's variables are written, never the
        teacher's; projections (distillation-only layers) are not part of the student.
        """
        os.makedirs(path, exist_ok=True)
        self.student.save_to_preset(path)
        if tokenizer is not None and not getattr(self.student, "preprocessor", None):
            tokenizer.save_to_preset(path)
        return path
