"""Answer scoring, pure functions: the official SQuAD 2.0 score, the project's lenient normalisation, exact
match, token F1, abstention detection, and selective prediction (risk-coverage, AURC, calibration error).

Two normalisations, on purpose: `squad_normalize` is the official evaluation script's (what the field reports);
`normalize_answer` also spells small numbers as digits, which is what two voters mean by "the same answer".

Shared by specialist evaluation, the aggregator and the benchmarks, so that "the same answer" and
"an abstention" mean one thing everywhere.
"""

from __future__ import annotations

import math
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
    """The project's lenient normalisation (not the official one): lower case, punctuation and articles to
    spaces, small numbers spelt as digits, thousands separators dropped: "The 1,000 Men." -> "1000 men"."""
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


# ------------------------------------------------------------------------------------ the official SQuAD 2.0 score

_PUNCT_SET = frozenset(string.punctuation)
OFFICIAL_KEYS = ("exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
                 "NoAns_exact", "NoAns_f1", "NoAns_total")


def squad_normalize(text: str) -> str:
    """The official SQuAD normalisation: lower case, punctuation removed (not spaced), articles and extra
    whitespace removed: "The Eiffel-Tower!" -> "eiffeltower"."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT_SET)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact(prediction: str, gold: str) -> int:
    """The official exact match of one prediction against one gold answer ("" is the no-answer)."""
    return int(squad_normalize(prediction) == squad_normalize(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """The official token F1 (0-1) of one prediction against one gold answer; when either is empty (a
    no-answer), 1 if both are and 0 otherwise."""
    pred, ref = squad_normalize(prediction).split(), squad_normalize(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_v2_score(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float | int]:
    """The official SQuAD 2.0 evaluation over all questions, with its keys (`OFFICIAL_KEYS`; 0-100).

    `golds[i]` lists question i's gold answers, empty when it is unanswerable; a prediction that is empty or
    an abstention (`is_abstention`) is the no-answer, which alone is right on an unanswerable question.
    HasAns/NoAns parts are left out when the set has no question of that kind, as the official script does.
    """
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold answer lists")
    if not predictions:
        raise ValueError("no predictions to score")
    exact, f1, has = [], [], []
    for prediction, answers in zip(predictions, golds):
        answer = "" if is_abstention(prediction) else prediction
        # the official script drops gold answers that normalise to nothing, and then scores against ""
        answers = [a for a in answers if squad_normalize(a)] or [""]
        exact.append(max(squad_exact(answer, g) for g in answers))
        f1.append(max(squad_f1(answer, g) for g in answers))
        has.append(answers != [""])
    out: dict[str, float | int] = {"exact": _mean100(exact), "f1": _mean100(f1), "total": len(predictions)}
    for part, keep in (("HasAns", True), ("NoAns", False)):
        idx = [i for i, h in enumerate(has) if h == keep]
        if idx:
            out[f"{part}_exact"] = _mean100([exact[i] for i in idx])
            out[f"{part}_f1"] = _mean100([f1[i] for i in idx])
            out[f"{part}_total"] = len(idx)
    return out


def always_abstain_score(golds: Sequence[Sequence[str]]) -> dict[str, float | int]:
    """The trivial floor: the official score of answering "no answer" to every question."""
    return squad_v2_score([""] * len(golds), golds)


def shared_mistakes(predictions: dict[str, Sequence[str]], golds: Sequence[Sequence[str]]) -> dict[str, dict]:
    """How often two models make the same mistake, for every pair: among the questions both get wrong
    (official exact match 0; an abstention on an answerable question is wrong, an answer to an unanswerable
    one too), the share where they give the same wrong answer (official normalisation, abstentions alike).
    A council's vote helps only where this is low. Keys "a|b" in the order given."""
    names = list(predictions)
    wrong, said = {}, {}
    for n in names:
        if len(predictions[n]) != len(golds):
            raise ValueError(f"{n}: {len(predictions[n])} predictions but {len(golds)} gold answer lists")
        said[n] = ["" if is_abstention(p) else squad_normalize(p) for p in predictions[n]]
        wrong[n] = [not any(s == squad_normalize(g) for g in (gs or [""])) for s, gs in zip(said[n], golds)]
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = [q for q in range(len(golds)) if wrong[a][q] and wrong[b][q]]
            same = sum(said[a][q] == said[b][q] for q in both)
            out[f"{a}|{b}"] = {"both_wrong": len(both), "same_wrong": same,
                               "same_wrong_share": round(same / len(both), 3) if both else 0.0}
    return out


def _mean100(values: Sequence[float]) -> float:
    return round(100 * sum(values) / len(values), 2)


# ------------------------------------------------------------------------------------ selective prediction


def risk_coverage(scores: Sequence[float], errors: Sequence[bool]) -> tuple[list[float], list[float]]:
    """The risk-coverage curve: answer the questions in order of falling score; at each coverage i/n, the
    risk is the share of errors among the i answered. Ties in score are taken together (their order is
    arbitrary, so no point is drawn between them)."""
    if len(scores) != len(errors):
        raise ValueError(f"{len(scores)} scores but {len(errors)} error flags")
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    coverage, risk, wrong = [], [], 0
    for rank, i in enumerate(order, 1):
        wrong += bool(errors[i])
        if rank == len(order) or scores[order[rank]] != scores[i]:
            coverage.append(rank / len(order))
            risk.append(wrong / rank)
    return coverage, risk


def aurc(scores: Sequence[float], errors: Sequence[bool]) -> float:
    """Area under the risk-coverage curve (0-1, lower is better): the mean selective risk over every coverage
    1/n .. n/n, with tied scores sharing their group's risk. A perfect ranking of e errors in n gives about
    its minimum; a random one gives about the error rate."""
    coverage, risk = risk_coverage(scores, errors)
    if not coverage:
        return 0.0
    n, area, last = len(scores), 0.0, 0
    for c, r in zip(coverage, risk):
        k = round(c * n)
        area += r * (k - last)
        last = k
    return area / n


def calibration_error(confidences: Sequence[float], correct: Sequence[bool], *, bins: int = 10) -> float:
    """Expected calibration error (0-1): over equal-width confidence bins, the gap between mean confidence and
    accuracy, weighted by the bin's share of the predictions."""
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} correctness flags")
    if not confidences:
        return 0.0
    return sum(abs(b["confidence"] - b["accuracy"]) * b["n"]
               for b in reliability_bins(confidences, correct, bins=bins)) / len(confidences)


def risk_at_coverage(scores: Sequence[float], errors: Sequence[bool], coverage: float) -> float | None:
    """The risk (share of errors) among the `coverage` share of questions answered first by falling score;
    None when the curve has no point at or beyond that coverage."""
    points = risk_coverage(scores, errors)
    return next((r for c, r in zip(*points) if c >= coverage - 1e-9), None)


def wilson_interval(successes: int, n: int, *, z: float = 1.96) -> tuple[float, float]:
    """The 95 % (z = 1.96) Wilson score interval of a rate successes / n; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def reliability_bins(confidences: Sequence[float], correct: Sequence[bool], *, bins: int = 10) -> list[dict]:
    """Per equal-width confidence bin with predictions in it: its mean confidence, accuracy and count (the
    points of a reliability diagram; `calibration_error` is their weighted gap)."""
    out = []
    for b in range(bins):
        idx = [i for i, c in enumerate(confidences)
               if b / bins <= c < (b + 1) / bins or (b == bins - 1 and c == 1.0)]
        if idx:
            out.append({"confidence": sum(confidences[i] for i in idx) / len(idx),
                        "accuracy": sum(bool(correct[i]) for i in idx) / len(idx), "n": len(idx)})
    return out
