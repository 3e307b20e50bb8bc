"""The reading data: every shared SQuAD-format file, split by whole articles, deduplicated, with more
unanswerable questions made by setting a question beside a paragraph that does not answer it.

Splits are by article (`specialists.domains.article_split`, a hash of the normalised title), so a held-out
article is held out whole, in every file it appears in: the test split is articles no specialist reads in
training, the validation split fits thresholds, and only the train split is ever trained on. The catalog's own
domain articles (squad2/dev-v2.0.json) are not reading data: their specialists split them by question.

A made unanswerable question ("swap") keeps its question and takes another paragraph of the same article that
holds none of its gold answers, the one sharing most words with the question: the hard case, where the topic
matches and the answer is missing. Its id is `<question id>~swap`.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from council.metrics import squad_normalize
from council.prompts import ABSTAIN_ANSWER
from specialists.data import AUGMENT_SEP, DatasetError, Example, _read_json, squad_examples, window
from specialists.domains import Split, article_split

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
# name -> file under ../shared/datasets (datasets/README.md): all SQuAD format
READING_FILES: dict[str, str] = {
    "squad2": "squad2/more-dev-v2.0.json",  # the only one with real unanswerable questions
    "squad11": "squad11/more-dev-v1.1.json",
    "squadshifts": "squadshifts/new_wiki_v1.0.json",
    "tydiqa": "tydiqa_goldp_en/english_tydiqa_train.json",
    "tydiqa_dev": "tydiqa_goldp_en/english_tydiqa_dev.json",
}
SWAP = "swap"
_WORD = re.compile(r"[a-z0-9]{4,}")


@dataclass(frozen=True)
class ReadingSet:
    """The examples of one split of one source, and the made unanswerable questions for them."""

    source: str
    split: Split
    examples: list[Example]  # the file's own questions, each with its whole paragraph
    swaps: list[Example]  # made unanswerable: a question beside another paragraph of its article


def read(source: str, split: Split, *, root: Path = DATASETS, files: dict[str, str] = READING_FILES) -> ReadingSet:
    """One source's questions of `split` (whole articles), deduplicated, and their swaps."""
    if source not in files:
        raise ValueError(f"unknown reading source {source!r}; known: {', '.join(files)}")
    path = root / files[source]
    articles = _paragraphs_by_article(path)
    title_of = {p: t for t, ps in articles.items() for p in ps}
    keep = {t for t in articles if article_split(t) == split}
    examples = dedupe(e for e in squad_examples(path) if title_of[e.context[0]] in keep)
    swaps = [s for e in examples if e.answerable
             and (s := swap(e, articles[title_of[e.context[0]]])) is not None]
    return ReadingSet(source, split, examples, swaps)


def _paragraphs_by_article(path: Path) -> dict[str, list[str]]:
    data = _read_json(path)  # the same missing-file and bad-JSON errors as squad_examples
    out: dict[str, list[str]] = defaultdict(list)
    try:
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                out[article["title"]].append(paragraph["context"])
    except (KeyError, TypeError) as e:
        raise DatasetError(f"{path}: not a SQuAD-format file ({type(e).__name__}: {e})") from None
    return dict(out)


def dedupe(examples: Iterable[Example]) -> list[Example]:
    """The examples with each (normalised question, paragraph) once: the first one seen is kept."""
    seen: set[tuple[str, str]] = set()
    out = []
    for e in examples:
        key = (squad_normalize(e.question), e.context[0] if e.context else "")
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def answer_in(answers: Sequence[str], paragraph: str) -> bool:
    """True when any gold answer occurs in the paragraph, compared as the official score normalises them."""
    text = _normalized(paragraph)
    return any(f" {squad_normalize(a)} " in text for a in answers if squad_normalize(a))


@lru_cache(maxsize=4096)  # an article's paragraphs are compared with each of its questions
def _normalized(paragraph: str) -> str:
    return f" {squad_normalize(paragraph)} "


@lru_cache(maxsize=4096)
def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def swap(example: Example, paragraphs: Sequence[str]) -> Example | None:
    """The example made unanswerable with the paragraph of `paragraphs` (its article's) that shares most words
    with the question and holds none of its answers; None when every other paragraph holds one."""
    words = _words(example.question)
    candidates = [p for p in paragraphs if p != example.context[0] and not answer_in(example.answers, p)]
    if not candidates:
        return None
    best = max(candidates, key=lambda p: len(words & _words(p)))  # max keeps the first of equals
    return Example(id=f"{example.id}{AUGMENT_SEP}{SWAP}", question=example.question, answer=ABSTAIN_ANSWER,
                   context=(best,), kind="squad_unanswerable", source=f"{example.source} {SWAP}")


def windowed(example: Example, sentences: int, seed: int = 0) -> Example:
    """The example with its paragraph cut to a window of `sentences` that holds its answer (a random window
    for an unanswerable one): shorter training prompts, the answer anywhere in them."""
    paragraph = example.context[0]
    start = paragraph.find(example.answer) if example.answerable else -1
    span = (start, start + len(example.answer)) if start >= 0 else None
    return replace(example, context=(window(paragraph, span, sentences, random.Random(f"{seed}:{example.id}")),))


def with_distractors(examples: Sequence[Example], most: int = 2, sentences: int = 2,
                     seed: int = 0) -> list[Example]:
    """Each example with 0 to `most` passages of other examples beside its own (`sentences` long, none holding
    its answers), all in random order: the council's shared context is several retrieved passages with the
    answer in one of them, and a reader trained on one passage alone abstains when it sees three."""
    rng = random.Random(seed)
    pool = list(dict.fromkeys(p for e in examples for p in e.context))
    out = []
    for e in examples:
        want, extra = rng.randint(0, most), []
        for _ in range(10 * most):  # a few draws may hold the answer or be its own passage
            if len(extra) == want:
                break
            p = rng.choice(pool)
            if p not in e.context and not answer_in(e.answers, p):
                extra.append(window(p, None, sentences, rng))
        context = [*e.context, *extra]
        rng.shuffle(context)
        out.append(replace(e, context=tuple(context)))
    return out


def mix(sets: Sequence[ReadingSet], *, size: int, unanswerable_share: float, seed: int = 0) -> list[Example]:
    """A training mix of `size` examples drawn evenly across the sets' answerable questions, with
    `unanswerable_share` of them unanswerable: the files' own unanswerable questions first, then swaps."""
    rng = random.Random(seed)
    n_unanswerable = round(size * unanswerable_share)
    answerable = _even([[e for e in s.examples if e.answerable] for s in sets], size - n_unanswerable, rng)
    own = [e for s in sets for e in s.examples if not e.answerable]
    rng.shuffle(own)
    picked = own[:n_unanswerable]
    swaps = [e for s in sets for e in s.swaps]
    picked += rng.sample(swaps, min(len(swaps), n_unanswerable - len(picked)))
    out = dedupe(answerable + picked)  # TyDi's train and dev files share a few questions
    rng.shuffle(out)
    return out


def _even(pools: list[list[Example]], n: int, rng: random.Random) -> list[Example]:
    """n examples taken as evenly as the pools allow (a small pool gives all it has, the rest share the rest)."""
    pools = sorted((rng.sample(p, len(p)) for p in pools if p), key=len)
    out: list[Example] = []
    for i, pool in enumerate(pools):
        take = min(len(pool), -(-(n - len(out)) // (len(pools) - i)))
        out += pool[:take]
    return out
