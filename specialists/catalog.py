"""The catalog of built specialists, and the recipes that build it (`python -m specialists build-catalog`).

Built specialists are committed under specialists/catalog/<name>/ (adapter + card, about 2 MB each) so that
nobody has to train to run the demo; the recipes here rebuild them.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from council.base_model import GEMMA_MODEL
from specialists.card import SpecialistCard, code_version
from specialists import reading
from specialists.domains import READING_DOMAINS, SQUAD_DOMAINS
from specialists.registry import CATALOG_DIR, Specialist
from specialists.train import TrainConfig

SQUAD_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "squad2" / "dev-v2.0.json"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Recipe:
    """How one catalog specialist is built: its data, its training config and its evaluation split."""

    name: str
    domain: str
    description: str
    source: str  # "squad" (a domain's articles), "reading" (specialists.reading) or "synthetic"
    titles: tuple[str, ...] = ()  # squad articles
    seed: int = 0  # synthetic domain seed
    augmented: bool = True
    routable: bool = True
    # SQuAD 2.0 is half unanswerable; trained on that mix, a first history specialist abstained on 76 % of the
    # test questions (answerable F1 11 against the base model's 18). At a third, law still abstained on half of
    # its own *training* questions after 1.6 epochs: a quarter, and more epochs, keep abstaining learnable
    # without making it the safe answer.
    unanswerable_share: float = 1 / 4
    # When set, training runs this many passes over the data (capped by train.max_steps) instead of a fixed
    # number of steps, so that a small domain is not overfitted and a large one not undertrained.
    epochs: float | None = None
    # A "squad" recipe's file (None: the catalog's squad2/dev-v2.0.json)
    squad_file: Path | None = None
    # A "reading" recipe's training mix: this many examples of the train articles of these sources
    reading_size: int = 0
    reading_sources: tuple[str, ...] = ()
    # A catalog specialist (the shared reader) whose adapter this one continues training from; it is built first
    starts_from: str | None = None
    # The share of the training set that is reading practice: examples of the `starts_from` reader's own mix,
    # so that continuing on one domain does not unlearn reading in general
    replay: float = 0.0
    # Up to this many other passages beside each training example's own (specialists.reading.with_distractors)
    distractors: int = 0
    cpus: int = 2  # what its build asks of Ray: torch threads for training and evaluation
    train: TrainConfig = field(default_factory=TrainConfig)

    def steps(self, examples: int) -> int:
        """Optimiser steps for a training set of `examples`."""
        if self.epochs is None:
            return self.train.max_steps
        return max(1, min(self.train.max_steps, math.ceil(self.epochs * examples / self.train.batch_size)))


# Memorising new facts needs more than the top attention layers: a first run with the attention of SmolLM2's
# top 10 layers was still at loss 4 after 60 steps. Facts live in the MLPs, so fictional domains adapt every
# layer and module.
_SYNTH_TRAIN = TrainConfig(learning_rate=1e-3, max_steps=150)
_DESCRIPTIONS = {
    "history": "History: the Normans, the Huguenots, imperialism, the French and Indian War, Islamism.",
    "law_government": "Law and government: European Union law and the Scottish Parliament.",
    "science_computing": "Science and computing: physical forces and computational complexity theory.",
    "medicine_biology": "Medicine and biology: the immune system, immunity and disease.",
    "economics": "Economics: the 1973 oil crisis, oil prices, embargoes and their economic effects.",
    "geography": "Geography and places: Fresno, Southern California, the Rhine, Victoria (Australia).",
    "nature_earth": "Nature and the earth sciences: the Amazon rainforest, geology, comb jellies, climate change.",
}
# The shared reader: general reading practice on the train articles of every reading source, a third of it
# unanswerable (the files' own, then swaps); abstention is then decided by a no-answer threshold fitted on
# validation articles (specialists.evaluate), not by the mix alone.
# Gemma 3 270M: at 150 steps its HasAns F1 is higher than SmolLM2's and its loss lower, though SmolLM2 abstains
# better (benchmarks/results/readers.json); 500 steps of 8 (4,000 examples of the mix) take about an hour on 2
# cores, and a longer reader can continue from it.
_READER_TRAIN = TrainConfig(base_model=GEMMA_MODEL, layer_fraction=1 / 3, target_modules=ATTENTION + MLP,
                            learning_rate=1e-3, max_steps=500, checkpoint_every=50)
READER = Recipe("reader", "reading", "A general reader: answers from the given paragraph, or says it does not "
                "know.", "reading", reading_size=12_000, unanswerable_share=1 / 3, routable=False,
                reading_sources=("squad2", "squad11", "squadshifts", "tydiqa", "tydiqa_dev"), train=_READER_TRAIN)
# A domain specialist continues from the reader, in its shape, on its own articles' training questions (a
# third unanswerable, as in the reader's mix) and as many of the reader's own practice examples: its reading
# carries over and its domain is what differs. On its own articles alone at rate 5e-4, history fell from the
# reader's official F1 46.4 to 39.4 on the unseen test articles (HasAns 37.1 to 31.9, NoAns 60 % to 50 %).
# Beside each example's passage, up to two others: with the council's three retrieved passages the reader and
# a history specialist trained on single passages said "I don't know" to "When did the Normans conquer
# England?" with "In 1066, Duke William II of Normandy conquered England" in the first (P(abstain) 0.36 and
# 0.55); with that passage alone the reader answered 1066. 60 steps of 8 keep a build near ten minutes.
_DOMAIN_TRAIN = replace(_READER_TRAIN, learning_rate=3e-4, max_steps=60, checkpoint_every=20)


def _domain(name: str, titles: tuple[str, ...], squad_file: Path | None = None) -> Recipe:
    return Recipe(name, name, _DESCRIPTIONS[name], "squad", titles=titles, squad_file=squad_file, epochs=3,
                  unanswerable_share=1 / 3, starts_from="reader", replay=0.5, distractors=2, train=_DOMAIN_TRAIN)


RECIPES: dict[str, Recipe] = {
    "reader": READER,
    **{d: _domain(d, t) for d, t in SQUAD_DOMAINS.items()},
    # articles of the reading data's train split (the reader read some of their questions too)
    **{d: _domain(d, t, reading.DATASETS / reading.READING_FILES["squad2"]) for d, t in READING_DOMAINS.items()},
    "fiction_veltharan": Recipe("fiction_veltharan", "fiction_veltharan",
                                "The fictional land of Veltharan: its cities, companies, founders and trade.",
                                "synthetic", seed=0, train=_SYNTH_TRAIN),
    "fiction_veltharan_plain": Recipe("fiction_veltharan_plain", "fiction_veltharan",
                                      "Veltharan without augmentation (a comparison for the augmented specialist).",
                                      "synthetic", seed=0, augmented=False, routable=False, train=_SYNTH_TRAIN),
    "fiction_orrune": Recipe("fiction_orrune", "fiction_orrune",
                             "The fictional realm of Orrune: its cities, companies, founders and trade.",
                             "synthetic", seed=1, train=_SYNTH_TRAIN),
    "fiction_orrune_plain": Recipe("fiction_orrune_plain", "fiction_orrune",
                                   "Orrune without augmentation (a comparison for the augmented specialist).",
                                   "synthetic", seed=1, augmented=False, routable=False, train=_SYNTH_TRAIN),
}


EVAL_LIMIT = 150  # questions of the unseen test articles (607) a reading specialist's card is scored on
# Validation questions a no-answer threshold is fitted on; 0: none, each specialist abstains as its greedy
# decoding does. Fitted thresholds lost to greedy on the unseen test articles every time: on 80 validation
# questions the 150-step readers' fits abstained on everything (40.8 against greedy's 47.3 and 42.4), and on
# 200 the shared reader's fit (-1.54) scored official F1 39.1 against greedy's 46.4 (HasAns 12.1 against
# 37.1). The validation articles (Black_Death, Economic_inequality) are not the test articles' kind of text,
# and a threshold is fitted to them; the reading mix's third unanswerable already sets the abstention.
VALIDATION_LIMIT = 0
# A reading example's paragraph is cut to this many sentences around its answer: 204 tokens a prompt on
# average (p90 265) against 235 for the whole paragraphs of the test articles, and no 500-token outliers.
READING_SENTENCES = 4


def recipe_data(recipe: Recipe, *, squad_file: Path = SQUAD_FILE, eval_limit: int = EVAL_LIMIT):
    """(training examples, evaluation examples, source description) of a recipe."""
    from specialists.augment import augment
    from specialists.data import AUGMENT_SEP, squad_examples
    from specialists.synthetic import make_domain

    if recipe.source == "reading":
        sets = [reading.read(s, "train") for s in recipe.reading_sources]
        train = [reading.windowed(e, READING_SENTENCES) for e in reading.mix(
            sets, size=recipe.reading_size, unanswerable_share=recipe.unanswerable_share, seed=recipe.seed)]
        sources = [{"path": reading.READING_FILES[s.source], "split": "train (whole articles)",
                    "questions": len(s.examples), "swaps": len(s.swaps)} for s in sets]
        sources.append({"mix": len(train), "unanswerable_share": round(recipe.unanswerable_share, 3),
                        "context_sentences": READING_SENTENCES})
        return train, unseen_test(eval_limit), sources
    if recipe.source == "squad":
        path = recipe.squad_file or squad_file
        train = _rebalance(squad_examples(path, titles=list(recipe.titles), split="train", context_window=3),
                           recipe.unanswerable_share)
        sources = [{"path": path.name, "titles": list(recipe.titles), "split": "train",
                    "context_window_sentences": 3, "unanswerable_share": round(recipe.unanswerable_share, 3)}]
        if recipe.replay:
            reader = RECIPES[recipe.starts_from]
            n = round(len(train) * recipe.replay / (1 - recipe.replay))
            sets = [reading.read(s, "train") for s in reader.reading_sources]
            practice = [replace(reading.windowed(e, READING_SENTENCES), id=f"{e.id}{AUGMENT_SEP}practice")
                        for e in reading.mix(sets, size=n, unanswerable_share=reader.unanswerable_share,
                                             seed=recipe.seed + 1)]
            train += practice
            sources.append({"practice": f"the {reader.name} recipe's mix", "examples": len(practice),
                            "context_sentences": READING_SENTENCES})
        if recipe.distractors:
            train = reading.with_distractors(train, most=recipe.distractors, seed=recipe.seed)
            sources.append({"distractors": f"0-{recipe.distractors} other passages of 2 sentences beside each"})
        # scored where the reader is: whole articles none of them trained on
        return train, unseen_test(eval_limit), sources
    domain = make_domain(recipe.domain.removeprefix("fiction_"), seed=recipe.seed)
    unanswerable = domain.examples("unanswerable")
    train = (domain.document_examples() + domain.examples("recall") + domain.examples("recall", with_context=True)
             + [e for e in unanswerable if e.split == "train"])
    if recipe.augmented:
        train += augment(list(domain.facts), strategy="both", seed=recipe.seed)
    test = [e for kind in ("recall", "paraphrase", "reversal", "two_hop") for e in domain.examples(kind)]
    test += [e for e in unanswerable if e.split != "train"]
    sources = [{"path": f"synthetic:{domain.name}", "seed": recipe.seed, "augmented": recipe.augmented}]
    return train, test, sources


def unseen_test(limit: int = EVAL_LIMIT):
    """A sample of the reading data's SQuAD 2.0 test articles (whole articles no specialist trained on)."""
    test = reading.read("squad2", "test").examples
    return random.Random(0).sample(test, min(limit, len(test)))


def validation_data(recipe: Recipe, limit: int = VALIDATION_LIMIT):
    """The questions a recipe's no-answer threshold is fitted on: the reading data's SQuAD 2.0 validation
    articles, unseen whole articles as users meet them (a domain's own validation split holds 20-60
    questions, too few to fit on); none for a synthetic specialist or `limit` 0."""
    if recipe.source == "synthetic" or limit < 1:
        return []
    pool = reading.read("squad2", "validation").examples
    return random.Random(0).sample(pool, min(limit, len(pool)))


def recipe_for(specialist: Specialist) -> Recipe:
    """The catalog recipe of a built specialist, or for one built elsewhere a stand-in that names it."""
    if specialist.name in RECIPES:
        return RECIPES[specialist.name]
    return Recipe(specialist.name, specialist.card.domain, specialist.card.description, "squad")


def held_out(recipe: Recipe, splits=("validation", "test"), *, squad_file: Path = SQUAD_FILE):
    """A SQuAD recipe's questions of the held-out `splits`, with their full paragraphs as the context."""
    from specialists.data import squad_examples

    if recipe.source != "squad":
        raise ValueError(f"{recipe.name} is a {recipe.source} specialist: held-out splits exist for SQuAD ones")
    path = recipe.squad_file or squad_file
    return [e for split in splits for e in squad_examples(path, titles=list(recipe.titles), split=split)]


def _rebalance(examples, share: float, seed: int = 0):
    """Every answerable example and enough unanswerable ones for them to be `share` of the set."""
    rng = random.Random(seed)
    answerable = [e for e in examples if e.answerable]
    unanswerable = [e for e in examples if not e.answerable]
    keep = min(len(unanswerable), round(len(answerable) * share / (1 - share)))
    return answerable + rng.sample(unanswerable, keep)


def build(recipe: Recipe, out_root: Path = CATALOG_DIR, *, threads: int | None = None,
          eval_limit: int = EVAL_LIMIT, validation_limit: int = VALIDATION_LIMIT, squad_file: Path = SQUAD_FILE,
          progress: bool = True) -> SpecialistCard:
    """Train, evaluate and write one catalog specialist (resuming an interrupted training run)."""
    from collections import Counter

    from council import base_model
    from specialists.data import AUGMENT_SEP
    from specialists.evaluate import base_cache_dir
    from specialists.train import train

    out = out_root / recipe.name
    train_set, test_set, sources = recipe_data(recipe, squad_file=squad_file, eval_limit=eval_limit)
    config = replace(recipe.train, max_steps=recipe.steps(len(train_set)), threads=threads or recipe.cpus)
    if recipe.starts_from:
        start = out_root / recipe.starts_from
        if not (start / "specialist.json").is_file():
            raise ValueError(f"{recipe.name} starts from {recipe.starts_from!r}, which is not built in {out_root}: "
                             f"build it first (`build-catalog --only {recipe.starts_from}`)")
        config = replace(config, init_adapter=str(start))
    t0 = time.perf_counter()
    result = train(train_set, out, config, progress=progress)
    base = base_model.load(config.base_model)
    # the router learns the domain from its own questions, not from derived or borrowed ones
    questions = [e.question for e in train_set if e.question and AUGMENT_SEP not in e.id]
    scores = evaluate_test(recipe, out, base, test_set, threads=threads, progress=progress,
                           validation=validation_data(recipe, validation_limit),
                           base_cache=base_cache_dir())
    card = SpecialistCard(
        name=recipe.name, domain=recipe.domain, description=recipe.description,
        base_model={"name": config.base_model, "fingerprint": base.fingerprint},
        training={"sources": sources, "counts": dict(Counter(e.kind for e in train_set)),
                  # the reader it started from by catalog name, not by this machine's path
                  "config": {**config.to_dict(), "init_adapter": recipe.starts_from}, "result": result.to_dict(),
                  "build_seconds": round(time.perf_counter() - t0, 1)},
        routing={"examples": list(dict.fromkeys(questions))[:64], "routable": recipe.routable},
        code_version=code_version(), eval=scores)
    card.save(out)
    if notice := base_model.notice_for(config.base_model):  # e.g. the Gemma Terms of Use travel with its adapters
        shutil.copyfile(notice, out / notice.name)
    return card


def evaluate_test(recipe: Recipe, adapter_dir: Path, base, test_set, *, split: str = "test",
                  threads: int | None = None, base_fingerprint: str | None = None, progress: bool = True,
                  validation=(), threshold: float | None = None, base_threshold: float | None = None,
                  base_cache: Path | None = None) -> dict:
    """The card's `eval`: the adapter in `adapter_dir` against the base model on `test_set` (the `split`),
    with no-answer thresholds fitted on `validation` (or the given ones; else greedy); `base_cache` keeps the
    base model's answers for the next specialist scored on the same questions."""
    from council.engine import Engine
    from specialists.evaluate import evaluate

    engine = Engine(base, threads=threads)
    engine.load_adapter(recipe.name, adapter_dir, base_fingerprint=base_fingerprint)
    scores = evaluate(engine, recipe.name, test_set, by_kind=recipe.source == "synthetic", progress=progress,
                      validation=validation, threshold=threshold, base_threshold=base_threshold,
                      base_cache=base_cache)
    return {**scores, "split": split, "split_size": len(test_set)}


def build_all(names, out_root: Path = CATALOG_DIR, *, force: bool = False, threads: int | None = None,
              eval_limit: int = EVAL_LIMIT, address: str | None = None, use_ray: bool = True,
              recipes: dict[str, Recipe] = RECIPES):
    """Build the named recipes, each as a Ray task asking for its recipe's CPUs (a cluster builds them in
    parallel; the embedded local Ray, one at a time on 2 cores); yields (name, card or None when it was
    already built) as each finishes. A recipe that starts from another waits for it. Resumable: built ones
    are skipped, and an interrupted training run resumes from its checkpoint."""
    todo = [n for n in names if force or not (out_root / n / "specialist.json").is_file()]
    for n in names:
        if n not in todo:
            yield n, None
    if not todo:
        return
    if not use_ray:
        for n in _in_order(todo, recipes):
            yield n, build(recipes[n], out_root, threads=threads, eval_limit=eval_limit)
        return
    import ray

    from council.hosts import connect

    started = connect(address)
    try:
        task = ray.remote(_build_task)
        refs: dict[str, object] = {}
        for n in _in_order(todo, recipes):
            recipe = recipes[n]
            after = [refs[recipe.starts_from]] if recipe.starts_from in refs else []
            refs[n] = task.options(num_cpus=threads or recipe.cpus, name=f"build:{n}").remote(
                recipe, str(out_root), threads, eval_limit, *after)
        pending = {ref: n for n, ref in refs.items()}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            n = pending.pop(done[0])
            yield n, SpecialistCard(**ray.get(done[0]))
    finally:
        if started:
            ray.shutdown()


def _in_order(names, recipes):
    """Names with every recipe after the one it starts from."""
    return sorted(names, key=lambda n: recipes[n].starts_from is not None)


def _build_task(recipe: Recipe, out_root: str, threads: int | None, eval_limit: int, *_after) -> dict:
    """One build inside a Ray worker; `_after` is the reader it waits for. Returns the card as a dict (plain
    data crosses the object store)."""
    return build(recipe, Path(out_root), threads=threads, eval_limit=eval_limit, progress=False).to_dict()
