"""Task heads keras-hub does not ship: `TokenClassifier` (per-token logits, e.g. CoNLL NER).

`TokenClassifier` is a keras-hub `Task`, so `save_to_preset(dir)` writes `task.json`,
`task.weights.h5` and the backbone files like any keras-hub task, and `TokenClassifier.from_preset`
reloads it (`keras_hub.models.Task.from_preset` refuses every class by design). It is registered
with Keras as `tinybert_tf>TokenClassifier`, so `tinybert_tf.distill.heads` must be imported before a
preset holding one is loaded.

`load_task_model(preset)` loads any task preset this package writes (text classifier, regressor or
token classifier) by the class named in its `task.json`.
"""

from __future__ import annotations

import keras
import keras_hub
from keras_hub.src.utils import preset_utils

from tinybert_tf.distill import dtypes

IGNORE_LABEL = -100  # tinybert_tf.data.tasks.IGNORE_LABEL: positions without a token label


@keras.saving.register_keras_serializable(package="tinybert_tf")
class TokenClassifier(keras_hub.models.Task):
    """Encoder backbone -> `sequence_output` [B, S, H] -> dropout -> dense: logits [B, S, C].

    backbone: any keras-hub encoder whose outputs include `sequence_output` (BERT, ELECTRA,
      RoBERTa, DistilBERT). Inputs are the backbone's (`{"token_ids", "segment_ids",
      "padding_mask"}` [B, S] for BERT).
    num_classes: tags per token (9 for CoNLL-2003 IOB).
    preprocessor: None (the usual case: `tinybert_tf.data.tasks` packs token labels itself).
    dropout: rate of `output_dropout` before the dense head.

    `output_dropout`, `output_dense` and `token_level = True` are what `features.head_logits`
    reads to compute the same logits from the feature view during distillation.
    Train on `(x, y [B, S] with -100 = no label, sample_weight [B, S])`: `compile()`'s default
    loss ignores label -100 and averages over the weighted positions only.
    """

    backbone_cls = None  # any encoder; from_preset below skips keras-hub's per-backbone lookup
    preprocessor_cls = None
    token_level = True

    def __init__(self, backbone, num_classes, preprocessor=None, dropout=0.1, **kwargs):
        # Layers first (keras-hub Task convention), then the functional graph.
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=backbone.dtype_policy, name="token_classifier_dropout"
        )
        self.output_dense = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=backbone.dtype_policy,
            name="token_logits",
        )
        inputs = backbone.input
        sequence = backbone(inputs)["sequence_output"]
        outputs = self.output_dense(self.output_dropout(sequence))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.num_classes = int(num_classes)
        self.dropout = float(dropout)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, dropout=self.dropout)
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """A `TokenClassifier` from a preset dir or name.

        * a `TokenClassifier` preset (task.json) -> the saved model, head weights included;
        * any other encoder preset (a backbone, or e.g. a `BertTextClassifier` dir) -> its
          backbone plus a new head: pass `num_classes=`.
        Passing `num_classes=` always builds a fresh head (as keras-hub classifiers do).
        """
        loader = preset_utils.get_preset_loader(preset)
        if not _is_token_classifier_preset(preset) and "num_classes" not in kwargs:
            raise ValueError(
                f"{preset} holds no TokenClassifier head; pass num_classes= to put a new token "
                "head on its backbone."
            )
        load_task_weights = "num_classes" not in kwargs
        kwargs.setdefault("preprocessor", None)
        return loader.load_task(cls, load_weights, load_task_weights, **kwargs)

    def compile(self, optimizer="auto", loss="auto", *, weighted_metrics="auto", **kwargs):
        """Defaults: Adam(5e-5), `token_loss()`, token accuracy weighted by `sample_weight`."""
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(5e-5)
        if loss == "auto":
            loss = token_loss()
        if weighted_metrics == "auto":
            weighted_metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics,
                        **kwargs)


def token_loss():
    """Cross-entropy on logits [B, S, C] vs labels [B, S], mean over weighted real positions.

    Label -100 positions ([CLS]/[SEP]/padding/continuation word pieces) are ignored, and the sum
    is divided by the sum of `sample_weight` (not by B*S), so padding does not dilute the loss.
    """
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=IGNORE_LABEL, reduction="mean_with_sample_weight"
    )


def _task_config(preset):
    if not preset_utils.check_file_exists(preset, preset_utils.TASK_CONFIG_FILE):
        return None
    return preset_utils.load_json(preset, preset_utils.TASK_CONFIG_FILE)


def _is_token_classifier_preset(preset):
    config = _task_config(preset)
    if config is None:
        return False
    cls = keras.saving.get_registered_object(config.get("registered_name", ""))
    return isinstance(cls, type) and issubclass(cls, TokenClassifier)


def load_task_model(preset, what="model", dtype=None):
    """The task model saved in `preset` (no preprocessor): a `TokenClassifier` or a keras-hub
    `TextClassifier` (classification or regression), chosen by the class in its task.json, with
    dtype policy `dtype` (default the run's; `dtypes.load_preset`)."""
    config = _task_config(preset)
    if config is None:
        raise ValueError(
            f"{what} preset {preset} has no task.json (a bare backbone?); pass a task model dir "
            "written by finetune or task_distill."
        )
    cls = keras.saving.get_registered_object(config.get("registered_name", ""))
    if isinstance(cls, type) and issubclass(cls, (TokenClassifier, keras_hub.models.TextClassifier)):
        return dtypes.load_preset(cls, preset, dtype, preprocessor=None)
    raise ValueError(
        f"{what} preset {preset} holds a {config.get('class_name')}; evaluate and task "
        "distillation read text classifiers or tinybert_tf TokenClassifier presets."
    )


def reorder_classes(model, order):
    """Permute a task model's classes in place: its class `order[i]` becomes class i (a teacher
    whose labels name the task's classes in another order, `teachers.label_order`). Every
    variable of the output layer (`output_dense`: kernel `[H, C]`, bias `[C]`, an int8 kernel's
    scale `[C]`) is taken along its last axis, so the logits come out in the task's order."""
    if order is None:
        return model
    dense = model.output_dense
    for variable in dense.variables:
        if variable.shape and variable.shape[-1] == len(order):
            variable.assign(keras.ops.take(variable, keras.ops.array(order), axis=-1))
    return model
