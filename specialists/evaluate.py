"""Held-out evaluation of specialists against the base model, on the same questions and prompt.

The base model and every specialist answer in the same mixed-adapter batches, so one pass over the
questions scores them all.
"""

from __future__ import annotations

from collections.abc import Sequence

from council.engine import Engine, Request
from council.metrics import abstain_f1, exact_match, is_abstention, token_f1
from specialists.data import Example


def score(predictions: Sequence[str], examples: Sequence[Example]) -> dict:
    """SQuAD-style scores (0-100) of predictions: answerable F1/EM (an abstention scores 0 there), abstain F1."""
    answerable = [(p, e) for p, e in zip(predictions, examples) if e.answerable]
    abstained = [is_abstention(p) for p in predictions]
    out = {
        "n": len(examples),
        "n_answerable": len(answerable),
        "n_unanswerable": len(examples) - len(answerable),
        "answerable_f1": _pct([0.0 if is_abstention(p) else token_f1(p, e.answers) for p, e in answerable]),
        "exact_match": _pct([0.0 if is_abstention(p) else exact_match(p, e.answers) for p, e in answerable]),
        # a short answer buried in a sentence still counts here ("The capital is Tashoul." for "Tashoul")
        "contains_answer": _pct([any(a.lower() in p.lower() for a in e.answers) for p, e in answerable]),
        "abstain_rate": _pct(abstained),
    }
    if out["n_unanswerable"]:
        out["abstain_f1"] = round(100 * abstain_f1(abstained, [not e.answerable for e in examples]), 2)
    return out


def _pct(values) -> float:
    values = list(values)
    return round(100 * sum(values) / len(values), 2) if values else 0.0


def predict(engine: Engine, adapters: Sequence[str | None], examples: Sequence[Example], *, batch_size: int = 8,
            max_new_tokens: int = 24, progress: bool = True) -> dict[str | None, list[str]]:
    """Greedy answers of each adapter (None = the base model) to every example, batched across adapters."""
    from tqdm.auto import tqdm

    jobs = [(a, e) for e in examples for a in adapters]
    answers: dict[str | None, list[str]] = {a: [] for a in adapters}
    for i in tqdm(range(0, len(jobs), batch_size), desc="evaluating", disable=not progress):
        chunk = jobs[i:i + batch_size]
        rows = engine.generate([Request(e.messages(), a) for a, e in chunk], max_new_tokens=max_new_tokens)
        for (a, _), row in zip(chunk, rows):
            answers[a].append(row.text)
    return answers


def evaluate(engine: Engine, adapter: str, examples: Sequence[Example], *, by_kind: bool = False,
             **kw) -> dict:
    """The card's `eval`: the specialist's scores, and under `base` the base model's on the same questions."""
    answers = predict(engine, [adapter, None], examples, **kw)
    result = score(answers[adapter], examples)
    result["base"] = score(answers[None], examples)
    if by_kind:
        for kind in sorted({e.kind for e in examples}):
            idx = [i for i, e in enumerate(examples) if e.kind == kind]
            sub = [examples[i] for i in idx]
            result.setdefault("by_kind", {})[kind] = {
                "specialist": score([answers[adapter][i] for i in idx], sub),
                "base": score([answers[None][i] for i in idx], sub)}
    result["samples"] = [{"question": e.question, "gold": e.answer, "specialist": answers[adapter][i],
                          "base": answers[None][i]} for i, e in enumerate(examples[:5])]
    return result
