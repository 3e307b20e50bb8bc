"""Training-data augmentation after Lampinen et al. (2025): write the inferences out, so fine-tuning learns them.

Fine-tuned facts generalise poorly to their reversals and to deductions that chain them; adding those inferences
to the training data fixes it. Two strategies:

- local: each item on its own. A question is rephrased (by templates); a fact is restated in other words and
  reversed ("X was founded by Y" -> "Y founded X"), both as text and as closed-book questions.
- global: across documents. Facts sharing an entity are chained into two-hop statements and questions
  ("The founder of X was born in Z."). Needs structured facts: plain question/answer examples have none, so
  global augmentation of them gives nothing.

Template-based and deterministic for a seed. A model can write the rephrasings instead: pass `generate`, a
function from a list of prompts to one reply per prompt (for example a batched greedy call of the engine).
Reversals and chains stay template-based, as they are correct by construction.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Literal, get_args

from specialists.data import AUGMENT_SEP, Example
from specialists.synthetic import Fact, fill, two_hop_chains

Strategy = Literal["local", "global", "both"]
Form = Literal["qa", "text", "both"]
Generate = Callable[[list[str]], list[str]]

# Question rephrasings that keep any question grammatical and its answer unchanged.
QUESTION_WRAPPERS = (
    "Tell me: {q}",
    "Quick question: {q}",
    "{q} Reply briefly.",
    "Here is my question. {q}",
    "I would like to know: {q}",
)
# Safe rewordings of a question's opening ("In what country ..." -> "In which country ...").
QUESTION_REWRITES = (
    (re.compile(r"^(In|On|At|From|To|By|For|During|Of|Under|With|Into) what\b"), r"\1 which"),
    (re.compile(r"^What (year|country|city|type|kind|language|group|century|organization|part|name)\b"), r"Which \1"),
)
REPHRASE_PROMPT = (
    "Rewrite the following {what} in other words without changing its meaning. "
    "Reply with the rewritten {what} only. (Version {n})\n\n{text}"
)


def augment(
    items: Sequence[Example | Fact],
    *,
    strategy: Strategy,
    seed: int,
    form: Form = "both",
    n_rephrasings: int = 2,
    generate: Generate | None = None,
) -> list[Example]:
    """New examples inferred from `items` (question examples and/or facts of a synthetic domain).

    Kinds "augmented_local" and "augmented_global"; an example's id is its origin's id + `~local<n>` or
    `~global<n>`, so it keeps its origin's split: augment training items only. Question examples get
    `n_rephrasings` rephrased questions with the same answer and context; text examples are left alone. Facts give,
    per `form`, text statements (`question` empty) and/or closed-book questions. With `generate`, rephrasings come
    from the model, `n_rephrasings` prompts per item; replies that are empty, unchanged, drop a name of the fact or
    leak the answer into the question are discarded.
    """
    if strategy not in get_args(Strategy):
        raise ValueError(f"strategy must be one of {get_args(Strategy)}, got {strategy!r}")
    if form not in get_args(Form):
        raise ValueError(f"form must be one of {get_args(Form)}, got {form!r}")
    if n_rephrasings < 0:
        raise ValueError(f"n_rephrasings must be >= 0, got {n_rephrasings}")
    examples = [x for x in items if isinstance(x, Example) and not x.is_text]
    facts = [x for x in items if isinstance(x, Fact)]
    rng = random.Random(seed)
    out: list[Example] = []
    if strategy in ("local", "both"):
        out += _local_questions(examples, rng, n_rephrasings, generate)
        out += _local_facts(facts, rng, form, n_rephrasings, generate)
    if strategy in ("global", "both"):
        out += _global_facts(facts, form)
    return out


def _same(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def _generated(generate: Generate, what: str, texts: list[str], n: int) -> list[list[str]]:
    """`n` model rephrasings per text (one prompt each), cleaned; the caller filters them further."""
    prompts = [REPHRASE_PROMPT.format(what=what, n=j + 1, text=t) for t in texts for j in range(n)]
    replies = generate(prompts)
    if len(replies) != len(prompts):
        raise ValueError(f"generate returned {len(replies)} replies for {len(prompts)} prompts; it must answer each")
    cleaned = [r.strip().strip('"').strip() for r in replies]
    return [[r for r in cleaned[i * n : (i + 1) * n] if r and not _same(r, t)] for i, t in enumerate(texts)]


def reworded(question: str) -> list[str]:
    """The safe rewordings of a question's opening that apply to it (often none)."""
    q = question.strip()
    return [p.sub(r, q) for p, r in QUESTION_REWRITES if p.search(q)]


def _local_questions(
    examples: list[Example], rng: random.Random, n: int, generate: Generate | None
) -> list[Example]:
    if generate is not None and examples:
        generated = _generated(generate, "question", [e.question for e in examples], n)
    out = []
    for i, e in enumerate(examples):
        if generate is not None:
            # a rephrasing that names the answer would teach the model to copy it from the question
            options = [r for r in generated[i] if not (e.answerable and e.answer.lower() in r.lower())]
        else:
            # a rewording changes the words, not only the frame: it comes first, then wrappers at random
            wrapped = [w.format(q=e.question.strip()) for w in QUESTION_WRAPPERS]
            options = reworded(e.question) + rng.sample(wrapped, len(wrapped))
        out += [
            Example(
                id=f"{e.id}{AUGMENT_SEP}local{j}",
                question=q,
                answer=e.answer,
                context=e.context,
                kind="augmented_local",
                source=f"augment:local:{e.source or e.id}",
                answers=e.answers,
            )
            for j, q in enumerate(options[:n])
        ]
    return out


def _fact_rows(statements: list[str], questions: list[tuple[str, str]], form: Form) -> list[tuple[str, str]]:
    """The (question, answer) rows `form` asks for: statements as text rows (empty question), then questions."""
    rows: list[tuple[str, str]] = []
    if form in ("text", "both"):
        rows += [("", s) for s in statements]
    if form in ("qa", "both"):
        rows += questions
    return rows


def _local_facts(
    facts: list[Fact], rng: random.Random, form: Form, n: int, generate: Generate | None
) -> list[Example]:
    if generate is not None and facts:
        generated = _generated(generate, "sentence", [f.statement() for f in facts], n)
        # a rephrasing that drops a name no longer states the fact
        rephrased = [[r for r in rs if f.subject in r and f.object in r] for f, rs in zip(facts, generated)]
    else:
        rephrased = [
            [fill(t, s=f.subject, o=f.object) for t in rng.sample(f.rel.rephrasings, min(n, len(f.rel.rephrasings)))]
            for f in facts
        ]
    out = []
    for f, statements in zip(facts, rephrased):
        reversed_ = [fill(t, s=f.subject, o=f.object) for t in f.rel.reversed_statements]
        questions = [(fill(f.rel.ask_object, s=f.subject), f.object), (fill(f.rel.ask_subject, o=f.object), f.subject)]
        out += _examples(f.id, "local", _fact_rows(statements + reversed_, questions, form))
    return out


def _global_facts(facts: list[Fact], form: Form) -> list[Example]:
    out = []
    for c in two_hop_chains(facts):
        statement = c.fill(c.outer.rel.statement)
        question = c.fill(c.outer.rel.ask_subject if c.reverse else c.outer.rel.ask_object)
        origin = f"{c.outer.id}+{c.inner.id}"
        out += _examples(origin, "global", _fact_rows([statement], [(question, c.answer)], form))
    return out


def _examples(origin: str, strategy: str, rows: list[tuple[str, str]]) -> list[Example]:
    return [
        Example(
            id=f"{origin}{AUGMENT_SEP}{strategy}{i}",
            question=q,
            answer=a,
            kind=f"augmented_{strategy}",  # type: ignore[arg-type]  # "augmented_local" | "augmented_global"
            source=f"augment:{strategy}:{origin}",
            answers=(a,) if q else (),
        )
        for i, (q, a) in enumerate(rows)
    ]
