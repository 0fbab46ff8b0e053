"""Distillation recipes as data: which loss terms, their weights, temperature and layer mapping.

The Distiller reads a `Recipe`; nothing else about a method is a code path. Terms:
`emb` (embedding MSE), `att` (attention scores MSE, or KL of probabilities), `hidden` (hidden-state
MSE), `pred` (TinyBERT soft cross-entropy at T, or MSE for regression), `kd` (DistilBERT KL * T^2),
`mlm` (masked-LM cross-entropy on labels), `cos` (cosine loss of last hidden states),
`pooled_cos` (cosine loss of mean-pooled sentence embeddings), `pooled_rel` (KL of in-batch
similarity distributions of those embeddings, at `similarity_temperature`), `hard`
(cross-entropy / MSE against task labels). MiniLM (Wang et al. 2020; 2021), teacher layer
`teacher_layer` -> the student's last layer, no layer map and no width projection: `minilm_att`
(KL of attention probabilities), `minilm_val` (KL of value relations per attention head), and
MiniLMv2's `qq`, `kk`, `vv` (KL of query/key/value relations over `relation_heads` heads).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

# What each loss term needs, in `TERMS` order (the order of trackers and logs). The term's function
# is `terms.FUNCTIONS[name]`; the `Recipe.needs_*` flags and the Distiller's checks are read from here:
#   layer_map       the student -> teacher layer map (`Recipe.layer_map`)
#   projection      student -> teacher width projections (TinyBERT's W_h), indexed by the map
#   teacher_layers  the teacher's layer features (cached teacher logits do not suffice)
#   teacher_output  the teacher's last hidden state: the teacher runs every layer
#   logits          the task heads' logits
#   teacher_head, student_head   a task model (not a bare backbone) on that side
#   labels          task labels `y` (or masked-LM `mask_ids`) and their `sample_weight`
#   mask_positions  `x["mask_positions"]` (masked-LM)
#   relations       MiniLM: teacher layer `teacher_layer` -> the student's last layer, any widths
#   same_heads      equal attention-head counts (TinyBERT's attention maps and MiniLM v1 compare
#                   head by head)
#   relation_heads  `relation_heads` divides the query/key/value widths of both (MiniLMv2)
# (`labels` and `mask_positions` are declared for readers: nothing checks them.)
_TINYBERT = frozenset({"layer_map", "projection", "teacher_layers"})
_SOFT_TARGETS = frozenset({"logits", "teacher_head", "student_head"})
_MINILM = frozenset({"teacher_layers", "relations"})
NEEDS = {
    "emb": _TINYBERT,
    "att": _TINYBERT | {"same_heads"},
    "hidden": _TINYBERT,
    "pred": _SOFT_TARGETS,
    "kd": _SOFT_TARGETS,
    "mlm": _SOFT_TARGETS | {"labels", "mask_positions"},
    # The sentence terms compare the (projected) last hidden states.
    "cos": _TINYBERT | {"teacher_output"},
    "pooled_cos": _TINYBERT | {"teacher_output"},
    "pooled_rel": _TINYBERT | {"teacher_output"},
    "hard": frozenset({"logits", "student_head", "labels"}),
    "minilm_att": _MINILM | {"same_heads"},
    "minilm_val": _MINILM | {"same_heads"},
    "qq": _MINILM | {"relation_heads"},
    "kk": _MINILM | {"relation_heads"},
    "vv": _MINILM | {"relation_heads"},
}
TERMS = tuple(NEEDS)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One distillation method. `weights` maps term name -> weight; absent terms are not computed.

    layer_map: "uniform" | "last" | explicit tuple of teacher layers (0-based), one per student layer.
    attention: "mse" on pre-softmax scores (TinyBERT) or "kl" on probabilities.
    share_projection: one student->teacher width projection for embeddings and all hidden layers
      (official TinyBERT `fit_dense`), else one per mapped layer.
    hidden_mask: mask padding out of the hidden/embedding MSE (official TinyBERT does not).
    regression: the prediction terms use MSE instead of soft targets (STS-B).
    kd_positions: DistilBERT soft targets over "all" real tokens (its default) or "masked" only.
    similarity_temperature: temperature of the `pooled_rel` in-batch similarity softmax.
    relation_heads: relation heads R of the `qq`/`kk`/`vv` terms; must divide the query/key/value
      widths of teacher and student. 48 is MiniLMv2's setting for base-size teachers (64 for
      large-size ones; Wang et al. 2021, as in PaddleNLP's MiniLMv2 example).
    teacher_layer: 0-based teacher layer of the MiniLM terms, -1 = the last (MiniLM v1 and
      MiniLMv2 with base-size teachers); MiniLMv2 distils an upper-middle layer of large teachers.
    """

    name: str
    weights: Mapping[str, float]
    temperature: float = 1.0
    layer_map: str | tuple[int, ...] = "uniform"
    attention: str = "mse"
    share_projection: bool = True
    hidden_mask: bool = False
    regression: bool = False
    kd_positions: str = "all"
    similarity_temperature: float = 0.05
    relation_heads: int = 48
    teacher_layer: int = -1

    def __post_init__(self):
        unknown = set(self.weights) - set(TERMS)
        if unknown:
            raise ValueError(f"Unknown loss terms {sorted(unknown)}; known terms are {TERMS}.")
        if self.attention not in ("mse", "kl"):
            raise ValueError(f"attention must be 'mse' or 'kl', got {self.attention!r}.")
        if self.kd_positions not in ("all", "masked"):
            raise ValueError(f"kd_positions must be 'all' or 'masked', got {self.kd_positions!r}.")
        if self.temperature <= 0 or self.similarity_temperature <= 0:
            raise ValueError(f"temperatures must be > 0, got {self.temperature} and "
                             f"{self.similarity_temperature}.")
        if int(self.relation_heads) < 1:
            raise ValueError(f"relation_heads must be >= 1, got {self.relation_heads}.")
        object.__setattr__(self, "weights", dict(self.weights))
        if isinstance(self.layer_map, list):
            object.__setattr__(self, "layer_map", tuple(self.layer_map))

    @property
    def terms(self):
        return tuple(t for t in TERMS if t in self.weights)

    def terms_needing(self, need):
        """This recipe's terms (in `TERMS` order) that declare `need` in `NEEDS`."""
        return tuple(t for t in self.terms if need in NEEDS[t])

    def _uses(self, need):
        return bool(self.terms_needing(need))

    @property
    def needs_layer_map(self):
        """TinyBERT's layer-wise terms and the sentence terms (their projection follows the map)."""
        return self._uses("layer_map")

    @property
    def needs_projection(self):
        """Terms that compare hidden states and so need a student->teacher width projection."""
        return self._uses("projection")

    @property
    def needs_relations(self):
        return self._uses("relations")

    @property
    def needs_teacher_layers(self):
        """Some term reads the teacher's layers (cached teacher logits do not suffice)."""
        return self._uses("teacher_layers")

    @property
    def needs_logits(self):
        return self._uses("logits")

    def teacher_depth(self, layer_map, teacher_layers):
        """How many of the teacher's `teacher_layers` layers (from the first) this recipe reads:
        all of them for a term on its head or its last hidden state; else as deep as the layer
        map (`layer_map`: the resolved map, `()` when none) and MiniLM's `teacher_layer` reach,
        so a teacher whose upper layers no loss reads does not run them."""
        if self._uses("teacher_head") or self._uses("teacher_output"):
            return teacher_layers
        deepest = max(layer_map, default=-1) if self.needs_layer_map else -1
        if self.needs_relations:
            deepest = max(deepest, self.teacher_layer % teacher_layers)
        return deepest + 1

    @property
    def needs_teacher(self):
        """Some term reads the teacher at all (plain fine-tuning, `hard` only, does not)."""
        return self._uses("teacher_layers") or self._uses("teacher_head")


RECIPES = {
    "tinybert_general": Recipe("tinybert_general", {"emb": 1.0, "att": 1.0, "hidden": 1.0}),
    # For sentence-embedding teachers: TinyBERT's terms plus the pooled sentence embedding itself,
    # its direction (cosine) and its neighbourhood (in-batch similarity KL). pooled_rel weight 10:
    # on the demo it lifted top-1 neighbour agreement 38.5 % -> 42.2 % over weight 1.
    "tinybert_sentence": Recipe(
        "tinybert_sentence",
        {"emb": 1.0, "att": 1.0, "hidden": 1.0, "pooled_cos": 1.0, "pooled_rel": 10.0},
    ),
    "tinybert_task_intermediate": Recipe(
        "tinybert_task_intermediate", {"emb": 1.0, "att": 1.0, "hidden": 1.0}
    ),
    "tinybert_task_prediction": Recipe("tinybert_task_prediction", {"pred": 1.0}, temperature=1.0),
    # Sanh et al. 2019 (DistilBERT): alpha_ce=5, alpha_mlm=2, alpha_cos=1, T=2.
    "distilbert": Recipe(
        "distilbert", {"kd": 5.0, "mlm": 2.0, "cos": 1.0}, temperature=2.0, layer_map="last"
    ),
    # DistilBERT-style single step on a labelled task: soft targets + hard labels.
    "distilbert_task": Recipe(
        "distilbert_task", {"kd": 0.5, "hard": 0.5}, temperature=2.0, layer_map="last"
    ),
    # Wang et al. 2020 (MiniLM): attention distributions + value relation of the last layer.
    "minilm": Recipe("minilm", {"minilm_att": 1.0, "minilm_val": 1.0}),
    # Wang et al. 2021 (MiniLMv2): Q-Q, K-K, V-V relations, any head counts.
    "minilm_v2": Recipe("minilm_v2", {"qq": 1.0, "kk": 1.0, "vv": 1.0}),
    # Plain fine-tuning of the student, no teacher term (the baseline reports compare to).
    "finetune": Recipe("finetune", {"hard": 1.0}),
}


def get(name, **overrides):
    """A recipe by name, with fields replaced, e.g. `get("tinybert_task_prediction", temperature=2)`."""
    if isinstance(name, Recipe):
        return dataclasses.replace(name, **overrides) if overrides else name
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; choose one of {sorted(RECIPES)}.")
    return dataclasses.replace(RECIPES[name], **overrides) if overrides else RECIPES[name]


def recipe_config(recipe):
    """`recipe` (a `Recipe`) as JSON-ready data: its name when it is the registered recipe of that
    name, else a dict of all its fields (`layer_map` a list when explicit). `from_recipe_config`
    reads it back."""
    if RECIPES.get(recipe.name) == recipe:
        return recipe.name
    config = dataclasses.asdict(recipe)
    if isinstance(config["layer_map"], tuple):
        config["layer_map"] = list(config["layer_map"])
    return config


def from_recipe_config(config):
    """The `Recipe` of `recipe_config`'s data: a registered recipe's name, or a dict of fields."""
    if isinstance(config, str):
        return get(config)
    return Recipe(**config)


def resolve_layer_map(layer_map, teacher_layers, student_layers):
    """Teacher layer (0-based) for each student layer; validated with a one-line error.

    uniform (TinyBERT): student layer i <-> teacher layer (i+1)*k-1 with k = teacher/student, so the
    hidden list [emb, h1..hM] pairs with the teacher's [emb, h_k, h_2k, ...].
    last: the student's layers pair with the teacher's top layers.
    """
    if isinstance(layer_map, str):
        if layer_map == "uniform":
            if teacher_layers % student_layers:
                example = resolve_layer_map("last", teacher_layers, student_layers)
                raise ValueError(
                    f"uniform layer mapping needs the teacher's layer count ({teacher_layers}) to "
                    f"be a multiple of the student's ({student_layers}); use layer_map='last' or "
                    f"an explicit list of {student_layers} teacher layers, e.g. {example}."
                )
            k = teacher_layers // student_layers
            return [(i + 1) * k - 1 for i in range(student_layers)]
        if layer_map == "last":
            if student_layers > teacher_layers:
                raise ValueError(
                    f"layer_map='last' needs student layers ({student_layers}) <= teacher layers "
                    f"({teacher_layers}); use an explicit list."
                )
            return [teacher_layers - student_layers + i for i in range(student_layers)]
        raise ValueError(f"layer_map must be 'uniform', 'last' or a list, got {layer_map!r}.")
    layers = [int(i) for i in layer_map]
    if len(layers) != student_layers or not all(0 <= i < teacher_layers for i in layers):
        raise ValueError(
            f"layer_map {layers} must list {student_layers} teacher layers, each in "
            f"0..{teacher_layers - 1}."
        )
    return layers
