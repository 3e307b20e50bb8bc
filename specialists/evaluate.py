"""Held-out evaluation of specialists against the base model, on the same questions and prompt.

The base model and every specialist answer in the same mixed-adapter batches, so one pass over the
questions scores them all. Each row is generated with the abstention's first token banned (`answer_only`),
so it gives its best answer, and carries its no-answer margin: the log-odds of the abstention at the first
step. Abstention is then a decision apart from the answer: abstain when the margin is above a threshold.
Threshold 0 abstains when the model puts more than half its probability on the abstention; plain greedy
decoding (`Generation.greedy_abstains`) is reported beside it; a threshold fitted on validation questions is
the SQuAD 2.0 readers' way (`fit_threshold`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from council.engine import Engine, Generation, Request
from council.metrics import abstain_f1, exact_match, is_abstention, squad_v2_score, token_f1
from council.prompts import ABSTAIN_ANSWER
from specialists.data import Example

log = logging.getLogger(__name__)


def decide(generations: Sequence[Generation], threshold: float = 0.0) -> list[str]:
    """Each row's answer, or the abstention where its no-answer margin is above `threshold`."""
    return [ABSTAIN_ANSWER if g.no_answer_margin > threshold else g.text for g in generations]


def fit_threshold(generations: Sequence[Generation], examples: Sequence[Example]) -> float:
    """The no-answer threshold with the best official F1 on these (validation) questions; of equals, the one
    nearest 0 (plain greedy)."""
    golds = [e.answers for e in examples]
    margins = sorted({g.no_answer_margin for g in generations} - {float("inf"), float("-inf")})
    # a cut between each pair of neighbouring margins, and one beyond either end
    candidates = [0.0, *(m - 1e-6 for m in margins[:1]), *((a + b) / 2 for a, b in zip(margins, margins[1:])),
                  *(m + 1e-6 for m in margins[-1:])]
    return max(candidates, key=lambda t: (squad_v2_score(decide(generations, t), golds)["f1"], -abs(t)))


def score(predictions: Sequence[str], examples: Sequence[Example]) -> dict:
    """Scores (0-100) of predictions: `official` (the SQuAD 2.0 script's, over all questions; an abstention is
    the no-answer), answerable F1/EM (an abstention scores 0 there, lenient normalisation), abstain F1."""
    answerable = [(p, e) for p, e in zip(predictions, examples) if e.answerable]
    abstained = [is_abstention(p) for p in predictions]
    out = {
        "n": len(examples),
        "n_answerable": len(answerable),
        "n_unanswerable": len(examples) - len(answerable),
        "official": squad_v2_score(predictions, [e.answers for e in examples]),
        "answerable_f1": _pct([0.0 if is_abstention(p) else token_f1(p, e.answers) for p, e in answerable]),
        "exact_match": _pct([0.0 if is_abstention(p) else exact_match(p, e.answers) for p, e in answerable]),
        # a short answer buried in a sentence still counts here ("The capital is Tashoul." for "Tashoul")
        "contains_answer": _pct([any(a.lower() in p.lower() for a in e.answers) for p, e in answerable]),
        "abstain_rate": _pct(abstained),
    }
    if out["n_unanswerable"]:
        out["abstain_f1"] = round(100 * abstain_f1(abstained, [not e.answerable for e in examples]), 2)
    return out


def _finite(x: float) -> float | None:
    return round(x, 4) if abs(x) != float("inf") else None  # JSON has no infinity


def _pct(values) -> float:
    values = list(values)
    return round(100 * sum(values) / len(values), 2) if values else 0.0


def predict(engine: Engine, adapters: Sequence[str | None], examples: Sequence[Example], *, batch_size: int = 8,
            max_new_tokens: int = 24, progress: bool = True,
            base_cache: str | Path | None = None) -> dict[str | None, list[Generation]]:
    """Every adapter's (None = the base model's) best answer to every example, with its no-answer margin
    (`answer_only` generation), batched across adapters.

    With `base_cache` (a folder), the base model's rows are kept there as JSON, keyed by its fingerprint and
    the prompts, and read back by the next call with the same questions: the catalog's specialists are all
    scored on the same questions, and the base would otherwise answer them again for each.
    """
    from tqdm.auto import tqdm

    cached = _base_cache_file(engine, examples, max_new_tokens, base_cache) if None in adapters else None
    out: dict[str | None, list[Generation]] = {a: [] for a in adapters}
    if cached is not None and cached.is_file():
        out[None] = [_generation(r) for r in json.loads(cached.read_text())]
        log.info("base model's answers to %d questions read from %s", len(examples), cached)
        adapters = [a for a in adapters if a is not None]
    jobs = [(a, e) for e in examples for a in adapters]
    for i in tqdm(range(0, len(jobs), batch_size), desc="evaluating", disable=not progress):
        chunk = jobs[i:i + batch_size]
        rows = engine.generate([Request(e.messages(), a) for a, e in chunk], max_new_tokens=max_new_tokens,
                               answer_only=True)
        for (a, _), row in zip(chunk, rows):
            out[a].append(row)
    if cached is not None and None in adapters:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps([g.to_dict() for g in out[None]]))
        tmp.replace(cached)
    return out


def base_cache_dir() -> Path:
    """Where `build-catalog` and `evaluate` keep the base model's answers: beside the converted models."""
    from council.base_model import default_cache_dir

    return default_cache_dir() / "base_answers"


def _base_cache_file(engine: Engine, examples: Sequence[Example], max_new_tokens: int,
                     folder: str | Path | None) -> Path | None:
    if folder is None:
        return None
    key = json.dumps([engine.base.fingerprint, max_new_tokens, [e.messages() for e in examples]], default=str)
    return Path(folder) / f"base-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def _generation(row: dict) -> Generation:
    row = dict(row)
    row.pop("new_tokens", None)  # derived in __post_init__
    return Generation(**row)


def evaluate(engine: Engine, adapter: str, examples: Sequence[Example], *, by_kind: bool = False,
             validation: Sequence[Example] = (), threshold: float | None = None,
             base_threshold: float | None = None, **kw) -> dict:
    """The card's `eval`: the specialist's scores, and under `base` the base model's on the same questions.

    Abstention is greedy's (threshold 0) unless no-answer thresholds are given (`threshold` for the adapter,
    `base_threshold` for the base), or `validation` questions are, on which each model's threshold is fitted
    (`no_answer` and `base_no_answer` say which, and show greedy's score too).
    """
    answers = predict(engine, [adapter, None], [*validation, *examples], **kw)
    thresholds, how = {}, {}
    for a, given in ((adapter, threshold), (None, base_threshold)):  # the base model gets its own: fair
        rows, answers[a] = answers[a][:len(validation)], answers[a][len(validation):]
        if given is not None:
            thresholds[a], how[a] = given, "given"
        elif validation:
            thresholds[a], how[a] = fit_threshold(rows, validation), f"fitted on {len(validation)} validation questions"
        else:
            thresholds[a], how[a] = 0.0, "0: abstain when P(abstain) > 1/2"
    texts = {a: decide(answers[a], thresholds[a]) for a in (adapter, None)}
    result = score(texts[adapter], examples)
    result["base"] = score(texts[None], examples)
    for key, a in (("no_answer", adapter), ("base_no_answer", None)):
        greedy = [ABSTAIN_ANSWER if g.greedy_abstains else g.text for g in answers[a]]
        result[key] = {"threshold": round(thresholds[a], 4), "how": how[a], "rule": "log-odds of abstaining",
                       "greedy_official": score(greedy, examples)["official"]}
    if by_kind:
        for kind in sorted({e.kind for e in examples}):
            idx = [i for i, e in enumerate(examples) if e.kind == kind]
            sub = [examples[i] for i in idx]
            result.setdefault("by_kind", {})[kind] = {
                "specialist": score([texts[adapter][i] for i in idx], sub),
                "base": score([texts[None][i] for i in idx], sub)}
    result["samples"] = [{"question": e.question, "gold": e.answer, "specialist": texts[adapter][i],
                          "base": texts[None][i]} for i, e in enumerate(examples[:5])]
    # every answer by question id: specialists scored on the same questions can be compared (shared mistakes)
    result["predictions"] = {e.id: texts[adapter][i] for i, e in enumerate(examples)}
    # and the answer each would give and its no-answer margin: any other threshold can be scored from the card
    result["answers"] = {e.id: [g.text, _finite(g.no_answer_margin)] for e, g in zip(examples, answers[adapter])}
    return result
