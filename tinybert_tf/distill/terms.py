"""The loss terms' functions, one per `recipes.TERMS` entry; what each needs is `recipes.NEEDS`.

`FUNCTIONS[name](inputs)` computes one term from a `TermInputs` (the `Pairing` of teacher and
student, the batch and the two feature views), in backend-neutral `keras.ops`, as a mean over the
local batch. `Distiller.compute_terms` calls the recipe's terms in `FUNCTIONS` order and adds
them up.

To add a term: declare its needs in `recipes.NEEDS` (its place there is its tracker/log order),
write its function here and add it to `FUNCTIONS`.
"""

from __future__ import annotations

import dataclasses
import functools

from keras import ops

from tinybert_tf.distill import losses, recipes


@dataclasses.dataclass(frozen=True)
class Pairing:
    """What the terms read of a teacher/student pair besides the batch, fixed when the Distiller
    is built.

    recipe: the `recipes.Recipe`.
    layer_map: the teacher layer (0-based) of each student layer, `()` when no term maps layers.
    projections: the student -> teacher width projections (keras layers; empty when the widths
      match or no term compares hidden states): one shared, or one per hidden state
      (0 = embeddings).
    teacher_layer: MiniLM's teacher layer as a 0-based index into the teacher's feature lists.
    student_heads: the student's attention-head count (MiniLM's value relations).
    student_mlm: whether the student is a masked-LM model (its logits are per masked position).
    """

    recipe: recipes.Recipe
    layer_map: tuple[int, ...] | list[int]
    projections: tuple | list
    teacher_layer: int
    student_heads: int
    student_mlm: bool


class TermInputs:
    """What the term functions read: the `Pairing`'s recipe, layer map and projections, the batch
    (`x`, `y`, `sample_weight`) and the teacher's and student's feature views `t`, `s`."""

    def __init__(self, pairing, x, y, sample_weight, t_feats, s_feats):
        self.pairing, self.recipe = pairing, pairing.recipe
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.t, self.s = t_feats, s_feats
        self.mask = x["padding_mask"]
        self.hidden_mask = self.mask if self.recipe.hidden_mask else None
        self.is_mlm = pairing.student_mlm

    def project(self, index, hidden):
        """Student -> teacher width projection `index` (0 = embeddings), if there are any."""
        projections = self.pairing.projections
        if not projections:
            return hidden
        return projections[0 if len(projections) == 1 else index](hidden)

    @functools.cached_property
    def last(self):
        """The student's projected last hidden state (once for all the sentence terms)."""
        return self.project(len(self.pairing.layer_map), self.s["sequence_output"])

    @property
    def token_weights(self):
        """Token-level heads ([B, S, C] logits): soft targets average over the labelled tokens
        (sample_weight [B, S]), or over real tokens when the data carries no weights."""
        s_logits = self.s.get("logits")
        if not self.is_mlm and s_logits is not None and len(s_logits.shape) == 3:
            return self.sample_weight if self.sample_weight is not None else self.mask
        return None


# ---- TinyBERT's layer-wise terms -----------------------------------------------------------------


def emb(inp):
    return losses.hidden_mse(inp.project(0, inp.s["embeddings"]), inp.t["embeddings"],
                             inp.hidden_mask)


def att(inp):
    total = 0.0
    for s_i, t_i in enumerate(inp.pairing.layer_map):
        if inp.recipe.attention == "mse":
            term = losses.attention_mse(
                inp.s["attention_scores"][s_i], inp.t["attention_scores"][t_i], inp.mask)
        else:
            term = losses.attention_kl(
                inp.s["attention_probs"][s_i], inp.t["attention_probs"][t_i], inp.mask)
        total = total + term
    return total


def hidden(inp):
    total = 0.0
    for s_i, t_i in enumerate(inp.pairing.layer_map):
        projected = inp.project(s_i + 1, inp.s["hidden_states"][s_i])
        total = total + losses.hidden_mse(projected, inp.t["hidden_states"][t_i], inp.hidden_mask)
    return total


# ---- sentence terms on the (projected) last hidden state -----------------------------------------


def cos(inp):
    return losses.cosine_hidden(inp.last, inp.t["sequence_output"], inp.mask)


def pooled_cos(inp):
    return losses.pooled_cosine(inp.last, inp.t["sequence_output"], inp.mask)


def pooled_rel(inp):
    return losses.pooled_similarity_kl(inp.last, inp.t["sequence_output"], inp.mask,
                                       inp.recipe.similarity_temperature)


# ---- MiniLM: teacher layer `recipe.teacher_layer` -> the student's last layer ------------------
# (`Pairing.teacher_layer`: that layer as a 0-based index, valid in a teacher run only as deep
# as the recipe reads, `Distiller.teacher_depth`)


def minilm_att(inp):
    return losses.attention_kl(inp.s["attention_probs"][-1],
                               inp.t["attention_probs"][inp.pairing.teacher_layer], inp.mask)


def minilm_val(inp):
    return losses.relation_kl(inp.s["values"][-1], inp.t["values"][inp.pairing.teacher_layer],
                              inp.mask, inp.pairing.student_heads)


def _relation(key):
    def term(inp):
        return losses.relation_kl(inp.s[key][-1], inp.t[key][inp.pairing.teacher_layer], inp.mask,
                                  inp.recipe.relation_heads)

    term.__name__ = f"relation_{key}"
    return term


# ---- prediction terms on the heads' logits -------------------------------------------------------


def pred(inp):
    s_logits, t_logits = inp.s.get("logits"), inp.t.get("logits")
    if inp.recipe.regression:
        return losses.logits_mse(s_logits, t_logits)
    return losses.soft_cross_entropy(s_logits, t_logits, inp.recipe.temperature,
                                     inp.token_weights)


def kd(inp):
    r = inp.recipe
    if inp.is_mlm:
        weights = inp.mask if r.kd_positions == "all" else inp.sample_weight
    else:
        weights = inp.token_weights
    return losses.kl_divergence(inp.s.get("logits"), inp.t.get("logits"), r.temperature, weights)


def mlm(inp):
    mlm_logits = inp.s.get("logits")
    if inp.recipe.kd_positions == "all":
        positions = ops.cast(inp.x["mask_positions"], "int32")[:, :, None]
        mlm_logits = ops.take_along_axis(mlm_logits, positions, axis=1)
    return losses.masked_lm_loss(mlm_logits, inp.y, inp.sample_weight)


def hard(inp):
    s_logits = inp.s.get("logits")
    if inp.recipe.regression:
        return losses.logits_mse(s_logits[..., 0], inp.y, inp.sample_weight)
    return losses.sparse_cross_entropy(s_logits, inp.y, inp.sample_weight)


# In the order `Distiller.compute_terms` computes and adds up a recipe's terms: float addition and
# the tape's sums of gradients of shared tensors follow it, so it stays the order the terms have
# always been computed in (losses and updates bit-identical); trackers and logs use `TERMS` order.
FUNCTIONS = {
    "emb": emb, "att": att, "hidden": hidden,
    "cos": cos, "pooled_cos": pooled_cos, "pooled_rel": pooled_rel,
    "minilm_att": minilm_att, "minilm_val": minilm_val,
    "qq": _relation("queries"), "kk": _relation("keys"), "vv": _relation("values"),
    "pred": pred, "kd": kd, "mlm": mlm, "hard": hard,
}

if sorted(FUNCTIONS) != sorted(recipes.TERMS):
    raise ImportError("terms.FUNCTIONS must name exactly the terms of recipes.TERMS.")
