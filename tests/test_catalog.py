"""The catalog's recipes: what each SQuAD specialist trains and is evaluated on (no model needed)."""

from __future__ import annotations

import pytest

from specialists.catalog import RECIPES, SQUAD_FILE, recipe_data
from specialists.data import root_id
from specialists.domains import split_of

SQUAD_RECIPES = [name for name, r in RECIPES.items() if r.source == "squad"]
pytestmark = pytest.mark.skipif(not SQUAD_FILE.exists(), reason="../shared/datasets/squad2 is missing")


@pytest.mark.parametrize("name", SQUAD_RECIPES)
def test_squad_recipes_train_on_train_questions_only_and_test_on_test(name):
    recipe = RECIPES[name]
    train, test, _ = recipe_data(recipe, eval_limit=10_000)
    assert {split_of(root_id(e.id)) for e in train} == {"train"}
    assert {split_of(e.id) for e in test} == {"test"}
    unanswerable = sum(not e.answerable for e in train) / len(train)
    assert unanswerable == pytest.approx(recipe.unanswerable_share, abs=0.01)
    assert len(test) >= 30  # enough held-out questions to tell a specialist from the base model


def test_paragraph_views_add_each_question_with_its_whole_paragraph():
    recipe = RECIPES["economics"]
    assert recipe.paragraph_views and not RECIPES["history"].paragraph_views
    train, test, sources = recipe_data(recipe)
    views = {e.id: e for e in train if e.id.endswith("~paragraph")}
    windows = {e.id: e for e in train if "~" not in e.id}
    assert views and sources[0]["paragraph_views"]
    for view_id, view in views.items():
        if root_id(view_id) in windows:  # unanswerable ones are sampled, so a view may lack its window
            window = windows[root_id(view_id)]
            assert view.question == window.question and view.answer == window.answer
            assert window.context[0] in view.context[0]
    # the paragraph view is the shape the card's eval asks in: the same paragraphs, whole
    assert {e.context for e in views.values()} & {e.context for e in test}


def test_practice_borrows_as_many_training_questions_from_other_domains():
    recipe = RECIPES["economics"]
    train, _, sources = recipe_data(recipe)
    practice = [e for e in train if e.id.endswith("~practice")]
    own = [e for e in train if not e.id.endswith("~practice")]
    assert len(practice) == len(own) == sources[1]["examples"]
    assert all("(1973_oil_crisis)" in e.source for e in own)
    assert not any("(1973_oil_crisis)" in e.source for e in practice)
    assert {split_of(root_id(e.id)) for e in practice} == {"train"}
