"""The catalog's recipes: what each SQuAD specialist trains and is evaluated on (no model needed)."""

from __future__ import annotations

import pytest

from specialists.catalog import RECIPES, SQUAD_FILE, recipe_data
from specialists.data import root_id
from specialists.domains import split_of

SQUAD_RECIPES = [name for name, r in RECIPES.items() if r.source == "squad"]
pytestmark = pytest.mark.skipif(not SQUAD_FILE.exists(), reason="../shared/datasets/squad2 is missing")


def _title(example):
    return example.source.split("] (", 1)[1][:-1]  # "<file>: data[i]...qas[k] (<title>)"


@pytest.mark.parametrize("name", SQUAD_RECIPES)
def test_domain_recipes_continue_the_reader_on_their_train_questions_and_are_scored_on_unseen_articles(name):
    from specialists.domains import article_split

    recipe, reader = RECIPES[name], RECIPES["reader"]
    train, test, sources = recipe_data(recipe, eval_limit=10_000)
    own = [e for e in train if not e.id.endswith("~practice")]
    practice = [e for e in train if e.id.endswith("~practice")]
    assert {split_of(root_id(e.id)) for e in own} == {"train"}
    assert {_title(e) for e in own} == set(recipe.titles)
    unanswerable = sum(not e.answerable for e in own) / len(own)
    assert unanswerable == pytest.approx(recipe.unanswerable_share, abs=0.01)
    # as many reading-practice examples, from the reader's train articles only
    assert len(practice) == len(own) == sources[1]["examples"]
    assert {article_split(_title(e)) for e in practice if "] (" in e.source} == {"train"}
    # the reader's shape and base, so that its adapter is where this one starts
    assert recipe.starts_from == "reader"
    shape = ("base_model", "rank", "alpha", "target_modules", "layers", "layer_fraction")
    assert [getattr(recipe.train, k) for k in shape] == [getattr(reader.train, k) for k in shape]
    # scored on whole articles that neither it nor the reader trained on
    assert {article_split(_title(e)) for e in test} == {"test"}
    assert not {e.question for e in test} & {e.question for e in train}
    assert sources[0]["titles"] == list(recipe.titles)


def test_domains_do_not_share_an_article():
    titles = [t for r in RECIPES.values() if r.source == "squad" for t in r.titles]
    assert len(titles) == len(set(titles)) and len(SQUAD_RECIPES) >= 7


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


def test_every_catalog_folder_is_portable_and_carries_its_model_card():
    """No path of the machine that trained it; a README.md model card naming its base and its GGUF origin."""
    import json

    from specialists.registry import CATALOG_DIR, load_catalog

    for name, s in load_catalog(CATALOG_DIR).items():
        base = json.loads((s.path / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert base == s.card.base_model["name"] and "/" not in base, name
        readme = (s.path / "README.md").read_text()
        assert readme == s.card.model_card(), f"{name}: README.md is stale; re-save the card"
        assert f"base_model: {base}" in readme and "GGUF" in readme, name
