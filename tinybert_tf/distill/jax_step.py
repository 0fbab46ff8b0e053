"""The Distiller's train/test step on the Keras JAX backend (`KERAS_BACKEND=jax`).

`Distiller` picks this module once when `keras.backend.backend() == "jax"`. Keras' JAX trainer
calls `train_step(state, data)` with `state = (trainable, non_trainable, optimizer, metrics)`
values (plain arrays, not `keras.Variable`s) and jits it; the step must return `(logs, state)`.

The step mirrors the TensorFlow one (`tf_step`) around the same backend-neutral
`Distiller.compute_terms`:

* the teacher's feature view is computed on its (non-trainable) values *outside* `jax.grad`, so no
  gradient work goes through the teacher;
* the student and projections run inside `jax.value_and_grad` on the traced trainable values (the
  values are bound to the variables with a `keras.StatelessScope`, as `Layer.stateless_call`
  does, because the feature view walks the backbone's sub-layers instead of calling the model);
* like `tape.gradient` returning None, trainable variables that no loss term reaches (e.g. the
  student's pooler under the intermediate-layer terms) get no update, not even weight decay; they
  are found once per input signature by a liveness pass over the loss's jaxpr;
* updated non-trainable values (dropout seed-generator states) and the metric trackers are
  returned in the new state.
"""

from __future__ import annotations

import weakref

import jax
import keras

# Distiller -> {input signature: which trainable variables the loss reaches} (`_live_trainable`).
_LIVE = weakref.WeakKeyDictionary()


def num_replicas():
    """One: this step runs without a `tf.distribute` strategy, on the whole batch."""
    return 1


def _bind(model, trainable, non_trainable):
    return list(zip(model.trainable_variables, trainable)) + list(
        zip(model.non_trainable_variables, non_trainable)
    )


def _new_values(scope, variables, old):
    out = []
    for variable, value in zip(variables, old):
        new = scope.get_current_value(variable)
        out.append(value if new is None else new)
    return out


def _teacher_values(model, trainable, non_trainable, x):
    """Teacher feature view (gradients stopped) on the current values."""
    with keras.StatelessScope(state_mapping=_bind(model, trainable, non_trainable)):
        t_feats = model.teacher_outputs(x)
    return jax.tree_util.tree_map(jax.lax.stop_gradient, t_feats)


def _loss_and_terms(model, trainable, non_trainable, t_feats, x, y, sample_weight, training):
    """Student forward + loss terms. Returns (loss, (terms, new non-trainable values))."""
    with keras.StatelessScope(state_mapping=_bind(model, trainable, non_trainable)) as scope:
        s_feats = model.student_features(x, training=training)
        terms = model.compute_terms(x, y, sample_weight, t_feats, s_feats)
    non_trainable = _new_values(scope, model.non_trainable_variables, non_trainable)
    return terms["loss"] / num_replicas(), (terms, non_trainable)


def _abstract(tree):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def _is_var(atom):
    return not hasattr(atom, "val")  # jaxpr Literals carry a `val`; Vars do not


def live_arguments(fn, args):
    """Which leaves of `args[0]` the (scalar) output of `fn(*args)` depends on.

    A backward liveness pass over `jax.make_jaxpr(fn)`: an equation is live if one of its outputs
    is; then all of its inputs are (conservative for equations with sub-jaxprs).
    """
    closed = jax.make_jaxpr(fn)(*_abstract(args))
    jaxpr = closed.jaxpr
    live = {v for v in jaxpr.outvars if _is_var(v)}
    for eqn in reversed(jaxpr.eqns):
        if any(v in live for v in eqn.outvars):
            live.update(v for v in eqn.invars if _is_var(v))
    num_first = len(jax.tree_util.tree_leaves(args[0]))
    return [v in live for v in jaxpr.invars[:num_first]]


def _live_trainable(model, trainable, non_trainable, t_feats, x, y, sample_weight):
    """Cached per input signature: True for each trainable variable the loss reaches."""
    key = str(_abstract((t_feats, x, y, sample_weight)))
    cache = _LIVE.setdefault(model, {})
    if key not in cache:

        def loss_only(tv, ntv, t, xx, yy, sw):
            return _loss_and_terms(model, tv, ntv, t, xx, yy, sw, training=True)[0]

        cache[key] = live_arguments(
            loss_only, (list(trainable), list(non_trainable), t_feats, x, y, sample_weight)
        )
    return cache[key]


def _update_metrics(model, metrics_values, terms):
    """Stateless update of the Distiller's `<term>_loss` trackers (in `model.metrics` order)."""
    logs, new_values, start = {}, [], 0
    for term, metric in model.trackers.items():  # `model.metrics` is this list, in this order
        count = len(metric.variables)
        values = metrics_values[start : start + count]
        start += count
        values = metric.stateless_update_state(values, terms[term])
        logs[metric.name] = metric.stateless_result(values)
        new_values.extend(values)
    return logs, new_values


def train_step(model, state, data):
    """One distillation step: `(logs, new_state)` for Keras' JAX trainer."""
    trainable, non_trainable, optimizer_values, metrics_values = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    t_feats = _teacher_values(model, trainable, non_trainable, x)
    live = _live_trainable(model, trainable, non_trainable, t_feats, x, y, sample_weight)

    def objective(tv):
        loss, aux = _loss_and_terms(model, tv, non_trainable, t_feats, x, y, sample_weight, True)
        optimizer_mapping = list(zip(model.optimizer.variables, optimizer_values))
        with keras.StatelessScope(state_mapping=optimizer_mapping):
            scaled = model.optimizer.scale_loss(loss)  # only a LossScaleOptimizer changes it
        return scaled, aux

    (_, (terms, non_trainable)), grads = jax.value_and_grad(objective, has_aux=True)(
        list(trainable)
    )
    optimizer = model.optimizer
    variables = model.trainable_variables
    mapping = list(zip(variables, trainable)) + list(zip(optimizer.variables, optimizer_values))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        pairs = [(g, v) for g, v, used in zip(grads, variables, live) if used]
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
    trainable = _new_values(scope, model.trainable_variables, trainable)
    optimizer_values = _new_values(scope, optimizer.variables, optimizer_values)
    logs, metrics_values = _update_metrics(model, metrics_values, terms)
    return logs, (trainable, non_trainable, optimizer_values, metrics_values)


def test_step(model, state, data):
    """Evaluation step: `(logs, new_state)` with `state = (trainable, non_trainable, metrics)`."""
    trainable, non_trainable, metrics_values = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    t_feats = _teacher_values(model, trainable, non_trainable, x)
    _, (terms, non_trainable) = _loss_and_terms(
        model, trainable, non_trainable, t_feats, x, y, sample_weight, training=False
    )
    logs, metrics_values = _update_metrics(model, metrics_values, terms)
    return logs, (trainable, non_trainable, metrics_values)
