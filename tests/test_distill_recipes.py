"""Recipes are data; layer maps follow TinyBERT and fail with a message that names the fix."""

import pytest

from tinybert_tf.distill import recipes


def test_uniform_map_is_tinybert():
    # 12-layer teacher, 4-layer student: attention layers 2, 5, 8, 11 (0-based).
    assert recipes.resolve_layer_map("uniform", 12, 4) == [2, 5, 8, 11]
    assert recipes.resolve_layer_map("uniform", 6, 3) == [1, 3, 5]
    assert recipes.resolve_layer_map("last", 12, 4) == [8, 9, 10, 11]
    assert recipes.resolve_layer_map([0, 5, 6, 11], 12, 4) == [0, 5, 6, 11]


def test_layer_map_errors():
    with pytest.raises(ValueError, match=r"multiple of the student's \(5\).*layer_map='last'"):
        recipes.resolve_layer_map("uniform", 12, 5)
    with pytest.raises(ValueError, match="must list 4 teacher layers"):
        recipes.resolve_layer_map([0, 1, 12, 3], 12, 4)
    with pytest.raises(ValueError, match="must be 'uniform', 'last'"):
        recipes.resolve_layer_map("middle", 12, 4)


def test_recipe_contents_and_overrides():
    d = recipes.get("distilbert")
    assert d.weights == {"kd": 5.0, "mlm": 2.0, "cos": 1.0} and d.temperature == 2.0
    assert recipes.get("tinybert_general").terms == ("emb", "att", "hidden")
    p = recipes.get("tinybert_task_prediction", temperature=3.0, regression=True)
    assert p.temperature == 3.0 and p.regression and not p.needs_teacher_layers
    with pytest.raises(ValueError, match="Unknown recipe"):
        recipes.get("tinybert_general_v2")
    with pytest.raises(ValueError, match="Unknown loss terms"):
        recipes.Recipe("x", {"att": 1.0, "attn": 1.0})


def test_config_loss_weights_replace_add_and_drop_terms():
    from tinybert_tf.errors import LaunchError
    from tinybert_tf.launch.config_lib import make_recipe as _recipe

    r = _recipe("tinybert_general", "1,2", "att=0.5, pooled_rel=10,emb=0")
    assert r.weights == {"att": 0.5, "hidden": 1.0, "pooled_rel": 10.0}
    assert r.layer_map == (1, 2)
    with pytest.raises(LaunchError, match="is not term=number, e.g. 'att=0.5"):
        _recipe("tinybert_general", "", "att=lots")
    with pytest.raises(LaunchError, match="'att' is not term=number"):
        _recipe("tinybert_general", "", "att")
    with pytest.raises(ValueError, match="Unknown loss terms \\['atention'\\]"):
        _recipe("tinybert_general", "", "atention=1")


def test_minilm_recipes():
    v2 = recipes.get("minilm_v2")
    assert v2.weights == {"qq": 1.0, "kk": 1.0, "vv": 1.0} and v2.terms == ("qq", "kk", "vv")
    assert v2.relation_heads == 48 and v2.teacher_layer == -1  # MiniLMv2, base-size teachers
    assert not v2.needs_layer_map and not v2.needs_projection and not v2.needs_logits
    assert v2.needs_relations and v2.needs_teacher_layers  # cached teacher logits do not suffice
    v1 = recipes.get("minilm")
    assert v1.weights == {"minilm_att": 1.0, "minilm_val": 1.0} and not v1.needs_layer_map
    general = recipes.get("tinybert_general")
    assert general.needs_layer_map and general.needs_projection and not general.needs_relations
    assert recipes.get("minilm_v2", relation_heads=64, teacher_layer=20).teacher_layer == 20
    with pytest.raises(ValueError, match="relation_heads must be >= 1"):
        recipes.get("minilm_v2", relation_heads=0)


def test_needs_come_from_the_terms_table():
    from tinybert_tf.distill import terms

    assert sorted(terms.FUNCTIONS) == sorted(recipes.TERMS) == sorted(recipes.NEEDS)
    for term in recipes.TERMS:
        r = recipes.Recipe(term, {term: 1.0})
        assert r.needs_teacher_layers == (r.needs_layer_map or r.needs_projection
                                        or r.needs_relations), term
        assert r.needs_teacher == (term != "hard"), term
    assert recipes.get("distilbert_task").terms_needing("student_head") == ("kd", "hard")
    assert recipes.get("distilbert_task").terms_needing("teacher_head") == ("kd",)
