"""The catalog's domains: which shared SQuAD 2.0 articles each SQuAD specialist learns, and the fixed splits.

Two splits, both by hash, so the same on every machine and for every stage. A domain's own articles split by
question (`split_of`): its specialist trains on some questions of an article and is tested on others. The
reading data splits by whole article (`article_split`): its test articles are ones no specialist has read.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["train", "validation", "test"]

# Article titles of ../shared/datasets/squad2/dev-v2.0.json by the domain they suit (datasets/README.md).
SQUAD_DOMAINS: dict[str, tuple[str, ...]] = {
    "history": ("Normans", "Huguenot", "Imperialism", "French_and_Indian_War", "Islamism"),
    "law_government": ("European_Union_law", "Scottish_Parliament"),
    "science_computing": ("Computational_complexity_theory", "Force"),
    "medicine_biology": ("Immune_system",),
    "economics": ("1973_oil_crisis",),
}
# Articles no specialist covers: out-of-domain questions for the router and the benchmarks.
OUT_OF_DOMAIN_ARTICLES: tuple[str, ...] = ("Harvard_University",)

# At 10 % the one economics article left 14 test questions, 4 of them answerable: too few to tell a specialist
# from the base model. Test took 5 points from validation, so no training set changed; validation still holds
# about 200 questions for fitting thresholds.
SPLIT_FRACTIONS: dict[Split, float] = {"train": 0.8, "validation": 0.05, "test": 0.15}


def split_of(question_id: str) -> Split:
    """The split a question belongs to: 80 % train, 5 % validation, 15 % test, stable by id."""
    h = int.from_bytes(hashlib.sha256(question_id.encode()).digest()[:8], "big") / 2**64
    if h < SPLIT_FRACTIONS["train"]:
        return "train"
    return "validation" if h < SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["validation"] else "test"


# Whole articles of the reading data (specialists.reading): of the 19 new SQuAD 2.0 articles this puts
# Black_Death and Economic_inequality in validation, Jacksonville,_Florida and Oxygen in test (607 questions,
# 270 unanswerable); tests/test_reading.py pins them.
ARTICLE_SPLIT_FRACTIONS: dict[Split, float] = {"train": 0.8, "validation": 0.07, "test": 0.13}


def article_split(title: str) -> Split:
    """The split of a whole article, stable by its normalised title ("Sky_(United_Kingdom)" and
    "sky (united kingdom)" are one article), so that an article is held out in every file it appears in."""
    key = "article:" + " ".join(title.replace("_", " ").lower().split())
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    if h < ARTICLE_SPLIT_FRACTIONS["train"]:
        return "train"
    return "validation" if h < 1 - ARTICLE_SPLIT_FRACTIONS["test"] else "test"


def domain_of(article_title: str) -> str | None:
    """The domain of a shared SQuAD article, or None when no specialist covers it."""
    return next((d for d, titles in SQUAD_DOMAINS.items() if article_title in titles), None)


# Domains of the reading data's train articles (squad2/more-dev-v2.0.json, `article_split` "train"): their
# specialists split them by question as above; the shared reader may have read any of their questions.
READING_DOMAINS: dict[str, tuple[str, ...]] = {
    "geography": ("Fresno,_California", "Southern_California", "Rhine", "Victoria_(Australia)"),
    "nature_earth": ("Amazon_rainforest", "Geology", "Ctenophora", "Intergovernmental_Panel_on_Climate_Change"),
}
