"""Training examples and the builders that read them from datasets: SQuAD 2.0, closed-book JSONL, documents.

An `Example` is asked with exactly the messages inference builds (council.prompts), its target as the
assistant turn; a document chunk for continued pre-training is plain text instead (empty question).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from council.prompts import ABSTAIN_ANSWER, Messages, closed_book_messages, rag_messages, with_answer
from specialists.domains import Split, split_of

Kind = Literal[
    "squad",
    "squad_unanswerable",
    "qa",
    "document",
    "recall",
    "paraphrase",
    "reversal",
    "two_hop",
    "unanswerable",
    "augmented_local",
    "augmented_global",
]
KINDS: tuple[str, ...] = get_args(Kind)

# Augmented examples are named `<original id>~<strategy><n>`: they keep the split of what they rephrase, so a
# rephrased test question can never be filtered into a training set.
AUGMENT_SEP = "~"


class DatasetError(ValueError):
    """A dataset that cannot be read into examples; the message names the file and the record."""


def root_id(example_id: str) -> str:
    """The id of the original example an augmented one was derived from (itself when not augmented)."""
    return example_id.split(AUGMENT_SEP, 1)[0]


@dataclass(frozen=True)
class Example:
    """One training or evaluation example.

    A question example (`question` set) is asked with `rag_messages` when it has a `context`, else with
    `closed_book_messages`; `answer` is its target, `ABSTAIN_ANSWER` when the question cannot be answered, and
    `answers` holds every gold answer for evaluation (empty when unanswerable). A text example (`question`
    empty, e.g. kind "document") is a chunk of plain text for continued pre-training: see `text()`.
    """

    id: str
    question: str
    answer: str
    context: tuple[str, ...] = ()
    kind: Kind = "qa"
    source: str = ""
    answers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Example {self.id!r}: unknown kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if not self.answer.strip():
            raise ValueError(f"Example {self.id!r}: empty answer (the target, or the text of a text example)")
        if self.is_text:
            return
        if self.answerable and self.answer not in self.answers:
            raise ValueError(f"Example {self.id!r}: the target {self.answer!r} is not among answers {self.answers}")
        if not self.answerable and self.answers:
            raise ValueError(f"Example {self.id!r}: an abstaining example has no gold answers, got {self.answers}")

    @property
    def is_text(self) -> bool:
        """True for plain-text examples (documents, stated facts) that are trained on as text, not as a chat."""
        return not self.question

    @property
    def answerable(self) -> bool:
        return self.answer != ABSTAIN_ANSWER

    @property
    def split(self) -> Split:
        """The fixed split (specialists.domains.split_of) of the example, or of the one it was augmented from."""
        return split_of(root_id(self.id))

    def messages(self) -> Messages:
        """The prompt inference would build for this question (without the answer)."""
        if self.is_text:
            raise ValueError(f"Example {self.id!r} is a text example (kind {self.kind!r}): use text(), not messages()")
        return rag_messages(self.question, self.context) if self.context else closed_book_messages(self.question)

    def training_messages(self) -> Messages:
        """The prompt plus the target as the assistant turn: what the specialist is trained on."""
        return with_answer(self.messages(), self.answer)

    def text(self) -> str:
        """The plain text of a text example (a document chunk or a stated fact)."""
        if not self.is_text:
            raise ValueError(f"Example {self.id!r} is a question example: use messages(), not text()")
        return self.answer

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Example:
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(d) - known):
            raise ValueError(f"Example.from_dict: unknown keys {unknown}; valid keys are {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ---------------------------------------------------------------------------------------------------- sentences

# A sentence ends at . ! ? (and any closing quote or bracket) followed by space and a capital, digit or quote.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATIONS = ("Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Jr.", "Sr.", "vs.", "e.g.", "i.e.", "U.S.", "U.K.", "c.", "No.")
_INITIAL = re.compile(r"(?:^|\s)[A-Z]\.$")  # "John F. Kennedy": an initial is not a sentence end


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans `(start, end)` of the sentences of `text`, covering it without gaps."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        head = text[start : m.start() + 1]
        if head.endswith(_ABBREVIATIONS) or _INITIAL.search(head):
            continue
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    return spans


def window(text: str, span: tuple[int, int] | None, size: int, rng: random.Random) -> str:
    """A window of `size` consecutive sentences of `text` that holds the character `span` (all of it, even when
    it crosses sentences); where the span sits in the window is random, so a model cannot learn its position.
    With no span, the window itself is placed at random."""
    sents = sentence_spans(text)
    if len(sents) <= size:
        return text
    if span is None:
        first = last = rng.randrange(len(sents))
    else:
        first = next(i for i, (_, e) in enumerate(sents) if span[0] < e)
        last = next(i for i, (_, e) in enumerate(sents) if span[1] <= e)
    n = max(size, last - first + 1)
    lo = rng.randint(max(0, last - n + 1), min(first, len(sents) - n))
    return text[sents[lo][0] : sents[lo + n - 1][1]].strip()


# ---------------------------------------------------------------------------------------------------- SQuAD 2.0


def _field(record: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object, got {type(record).__name__}")
    if key not in record:
        raise DatasetError(f"{where}: missing {key!r}")
    value = record[key]
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise DatasetError(f"{where}: {key!r} must be a non-empty {kind.__name__}, got {value!r:.60}")
    return value


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _answer_span(context: str, answer: dict[str, Any], where: str) -> tuple[str, tuple[int, int]]:
    text = _field(answer, "text", str, where)
    start = answer.get("answer_start")
    if not (isinstance(start, int) and context[start : start + len(text)] == text):
        start = context.find(text)  # a wrong offset is recoverable when the text occurs in the paragraph
        if start < 0:
            raise DatasetError(f"{where}: answer {text!r} does not occur in the paragraph")
    return text, (start, start + len(text))


def squad_examples(
    path: str | Path,
    *,
    titles: Iterable[str] | None = None,
    split: Split | None = None,
    context_window: int | None = None,
    seed: int = 0,
) -> list[Example]:
    """Reading-comprehension examples from a SQuAD 2.0 file, one per question.

    Answerable questions (kind "squad") target their first gold answer; unanswerable ones (`is_impossible`,
    kind "squad_unanswerable") target `ABSTAIN_ANSWER`. `titles` keeps only those articles (all must exist),
    `split` only the questions `split_of(id)` puts there. The context is the full paragraph (for evaluation) unless
    `context_window` sentences are asked for: then a window holding the answer (the plausible answer for an
    unanswerable question, else a random window), placed by a generator seeded with `seed` and the question id,
    which keeps training prompts short (about 2 sentences ~ 60 words instead of ~130 for a paragraph).
    """
    path = Path(path)
    if context_window is not None and context_window < 1:
        raise ValueError(f"context_window must be a number of sentences >= 1 or None, got {context_window}")
    articles = _field(_read_json(path), "data", list, str(path))
    wanted = None if titles is None else set(titles)
    if wanted is not None:
        present = {a.get("title") for a in articles if isinstance(a, dict)}
        if missing := sorted(wanted - present):
            raise DatasetError(f"{path}: no article titled {missing}; the file has {sorted(map(str, present))}")
    examples: list[Example] = []
    seen: set[str] = set()
    for i, article in enumerate(articles):
        where_a = f"{path}: data[{i}]"
        title = _field(article, "title", str, where_a)
        if wanted is not None and title not in wanted:
            continue
        for j, paragraph in enumerate(_field(article, "paragraphs", list, where_a)):
            where_p = f"{where_a}.paragraphs[{j}]"
            context = _field(paragraph, "context", str, where_p)
            for k, qa in enumerate(_field(paragraph, "qas", list, where_p)):
                where = f"{where_p}.qas[{k}]"
                qid = _field(qa, "id", str, where)
                question = _field(qa, "question", str, where)
                if qid in seen:
                    raise DatasetError(f"{where}: duplicate id {qid!r}")
                seen.add(qid)
                if split is not None and split_of(qid) != split:
                    continue
                impossible = qa.get("is_impossible", False)
                if not isinstance(impossible, bool):
                    raise DatasetError(f"{where}: 'is_impossible' must be true or false, got {impossible!r}")
                key = "plausible_answers" if impossible else "answers"
                golds = [
                    _answer_span(context, a, f"{where}.{key}[{n}]") for n, a in enumerate(qa.get(key) or [])
                ]
                if not impossible and not golds:
                    raise DatasetError(f"{where}: an answerable question with no 'answers'")
                passage = context
                if context_window is not None:
                    rng = random.Random(f"{seed}:{qid}")
                    passage = window(context, golds[0][1] if golds else None, context_window, rng)
                answers = () if impossible else tuple(dict.fromkeys(text for text, _ in golds))
                examples.append(
                    Example(
                        id=qid,
                        question=question.strip(),
                        answer=ABSTAIN_ANSWER if impossible else golds[0][0],
                        context=(passage,),
                        kind="squad_unanswerable" if impossible else "squad",
                        source=f"{where} ({title})",
                        answers=answers,
                    )
                )
    if not examples:
        raise DatasetError(f"{path}: no examples (titles={sorted(wanted) if wanted else 'all'}, split={split})")
    return examples


# ---------------------------------------------------------------------------------------------------- JSONL


def qa_examples(path: str | Path, *, split: Split | None = None) -> list[Example]:
    """Question/answer examples from JSON lines: `question`, `answer` (`ABSTAIN_ANSWER` for an unanswerable one)
    and optionally `id` (default `<file stem>-<line>`), `answers` (more gold answers) and `context` (a passage or
    a list of passages; without one the example is closed-book). Kind "qa"; `split` filters by `split_of(id)`."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    examples: list[Example] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: not valid JSON ({e.msg})") from None
        question = _field(record, "question", str, where).strip()
        answer = _field(record, "answer", str, where).strip()
        qid = str(record.get("id", f"{path.stem}-{n}"))
        if qid in seen:
            raise DatasetError(f"{where}: duplicate id {qid!r}")
        seen.add(qid)
        context = record.get("context", [])
        context = [context] if isinstance(context, str) else context
        if not (isinstance(context, list) and all(isinstance(c, str) and c.strip() for c in context)):
            raise DatasetError(f"{where}: 'context' must be a passage or a list of passages")
        extra = record.get("answers", [])
        if not (isinstance(extra, list) and all(isinstance(a, str) for a in extra)):
            raise DatasetError(f"{where}: 'answers' must be a list of strings")
        if split is not None and split_of(qid) != split:
            continue
        answerable = answer != ABSTAIN_ANSWER
        examples.append(
            Example(
                id=qid,
                question=question,
                answer=answer,
                context=tuple(context),
                kind="qa",
                source=where,
                answers=tuple(dict.fromkeys([answer, *extra])) if answerable else (),
            )
        )
    if not examples:
        raise DatasetError(f"{path}: no examples (split={split})")
    return examples


# ---------------------------------------------------------------------------------------------------- documents

DOCUMENT_SUFFIXES = (".txt", ".md")


def _pieces(paragraph: str, max_words: int) -> list[str]:
    """A paragraph cut at sentence ends (or, for a sentence that is too long, at words) into <= max_words."""
    pieces: list[str] = []
    for s, e in sentence_spans(paragraph):
        words = paragraph[s:e].split()
        pieces += [" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words)]
    return pieces


def chunk_text(text: str, *, max_words: int = 200) -> list[str]:
    """Consecutive chunks of at most `max_words` words, cut at paragraph (blank line) ends where possible, then at
    sentence ends; paragraphs stay separated by a blank line inside a chunk."""
    chunks: list[str] = []
    current: list[str] = []  # paragraphs (or pieces of one) of the chunk being filled
    count = 0
    for paragraph in re.split(r"\n\s*\n", text):
        if not paragraph.strip():
            continue
        pieces = [" ".join(paragraph.split())] if len(paragraph.split()) <= max_words else _pieces(paragraph, max_words)
        for piece in pieces:
            n = len(piece.split())
            if current and count + n > max_words:
                chunks.append("\n\n".join(current))
                current, count = [], 0
            current.append(piece)
            count += n
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def document_examples(paths: Iterable[str | Path], *, max_words: int = 200) -> list[Example]:
    """Plain-text examples (kind "document") for continued pre-training, from .txt and .md files (a folder stands
    for the files of those kinds inside it, sorted), chunked by `chunk_text`."""
    paths = [Path(p) for p in paths]
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix in DOCUMENT_SUFFIXES)
        elif p.suffix not in DOCUMENT_SUFFIXES:
            raise DatasetError(f"{p}: not a document; use one of {', '.join(DOCUMENT_SUFFIXES)} or a folder")
        elif not p.is_file():
            raise DatasetError(f"{p}: no such file")
        else:
            files.append(p)
    examples = [
        Example(id=f"{f.name}#{i}", question="", answer=chunk, kind="document", source=f"{f}: chunk {i}")
        for f in files
        for i, chunk in enumerate(chunk_text(f.read_text(encoding="utf-8"), max_words=max_words))
    ]
    if not examples:
        raise DatasetError(f"no document text in {[str(f) for f in files] or [str(p) for p in paths]}")
    return examples
