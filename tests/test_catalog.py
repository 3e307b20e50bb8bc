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


def test_the_reader_trains_on_train_articles_only_and_is_scored_on_unseen_ones():
    from dataclasses import replace

    from specialists.domains import article_split

    train, test, sources = recipe_data(replace(RECIPES["reader"], reading_size=400), eval_limit=50)
    title = lambda e: e.source.split("] (", 1)[1].split(")")[0] if "] (" in e.source else ""  # noqa: E731
    assert len(train) == 400 and {article_split(title(e)) for e in train} == {"train"}
    assert sum(not e.answerable for e in train) == round(400 / 3)
    assert {article_split(title(e)) for e in test} == {"test"} and len(test) == 50
    assert sources[-1]["mix"] == 400


@pytest.mark.ray
def test_build_all_runs_each_build_as_a_ray_task_after_the_one_it_starts_from(tiny_model_dir, tmp_path):
    from dataclasses import replace

    from specialists.catalog import Recipe, build_all
    from specialists.train import TrainConfig

    config = TrainConfig(base_model=str(tiny_model_dir), max_steps=2, batch_size=4, layers=(1,),
                         target_modules=("q_proj", "v_proj"), max_length=256)
    first = Recipe("first", "fiction_orrune", "tiny reader", "synthetic", seed=1, cpus=1, train=config)
    recipes = {"second": replace(first, name="second", starts_from="first"), "first": first}
    built = dict(build_all(["second", "first"], tmp_path, recipes=recipes, eval_limit=2))
    assert set(built) == {"first", "second"} and all(card is not None for card in built.values())
    assert built["second"].training["config"]["init_adapter"] == "first"  # a name, not this machine's path
    assert (tmp_path / "second" / "adapter_model.safetensors").is_file()
    again = dict(build_all(["first", "second"], tmp_path, recipes=recipes, use_ray=False))
    assert again == {"first": None, "second": None}  # built ones are skipped: a rerun resumes
