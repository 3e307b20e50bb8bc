"""Answer scoring, pure functions: SQuAD-style normalisation, exact match, token F1, abstention detection.

Shared by specialist evaluation, the aggregator and the benchmarks, so that "the same answer" and
"an abstention" mean one thing everywhere.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
# The trained ABSTAIN_ANSWER ("I don't know.") and the common phrasings by which a model says it cannot answer.
_ABSTAIN_PATTERNS = re.compile(
    r"^(i (do not|dont|cannot|cant) (know|answer|say|tell|find)|unknown|unanswerable|no answer|"
    r"(the )?context does not|there is no (information|mention)|not (mentioned|stated|given)|cannot be determined)")


def normalize_answer(text: str) -> str:
    """Lower case, strip punctuation, articles and extra whitespace, spell small numbers as digits,
    drop thousands separators: "The 1,000 Men." -> "1000 men"."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.lower())
    text = _ARTICLES.sub(" ", text.translate(_PUNCT))
    return " ".join(_NUMBER_WORDS.get(w, w) for w in text.split())


def is_abstention(text: str) -> bool:
    """True when an answer says it does not know (the trained abstention or a common paraphrase)."""
    norm = normalize_answer(text).replace("don t", "do not").replace("can t", "cannot")
    return not norm or bool(_ABSTAIN_PATTERNS.match(norm))


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def token_f1(prediction: str, golds: Iterable[str]) -> float:
    """SQuAD token F1 (0-1) against the best-matching gold answer."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        ref = normalize_answer(gold).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def abstain_f1(predicted_abstain: Sequence[bool], unanswerable: Sequence[bool]) -> float:
    """F1 (0-1) of abstaining, with "the question is unanswerable" as the positive class."""
    tp = sum(p and u for p, u in zip(predicted_abstain, unanswerable))
    fp = sum(p and not u for p, u in zip(predicted_abstain, unanswerable))
    fn = sum(u and not p for p, u in zip(predicted_abstain, unanswerable))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0
