"""Seeded fictional domains after Lampinen et al. (2025): nonsense entities, relations between them, short
documents stating the facts, and question sets for recall, paraphrase, reversal, two-hop deduction and abstention.

No pre-trained model can know these facts: every name is built from generated syllables and checked against a
blocklist of real words, so whatever a specialist answers it learned from the documents. Everything is drawn from
one `random.Random` seeded by the domain's name and seed (never from `hash()` or set order), so the same
arguments give the same domain on every machine.

Documents group the facts by their subject (one paragraph per city, person or company), and every relation is
one-to-one where it is stated, so a reversed question ("Who founded X?" -> "What did Y found?") and a description
("the founder of X") always have exactly one answer.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from council.prompts import ABSTAIN_ANSWER
from specialists.data import Example

EntityType = Literal["country", "city", "person", "company", "goods"]
QuestionKind = Literal["recall", "paraphrase", "reversal", "two_hop", "unanswerable"]
QUESTION_KINDS: tuple[str, ...] = get_args(QuestionKind)


@dataclass(frozen=True)
class Relation:
    """A relation `subject -> object` and every way it is written. `{s}` is the subject, `{o}` the object.

    The question templates (recall, paraphrases, reversals) make the evaluation sets; the `rephrasings`,
    `reversed_statements` and `ask_*` templates are for augmentation only, so augmented training data never
    contains an evaluation question word for word.
    """

    name: str
    subject_type: EntityType
    object_type: EntityType
    statement: str  # as the documents state it
    recall: str  # asks for the object, worded as the statement
    paraphrases: tuple[str, ...]  # ask for the object in other words
    reversals: tuple[str, ...]  # ask for the subject given the object
    object_description: str  # names the object through the subject: "the founder of {s}"
    subject_description: str  # names the subject through the object: "the company founded by {o}"
    rephrasings: tuple[str, ...]
    reversed_statements: tuple[str, ...]  # the same fact, the object first
    ask_object: str
    ask_subject: str


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in (
        Relation(
            "capital_of", "city", "country",
            statement="{s} is the capital of {o}.",
            recall="{s} is the capital of which country?",
            paraphrases=("Which country has {s} as its capital?", "Of which country is {s} the capital city?"),
            reversals=("What is the capital of {o}?", "Which city is the capital of {o}?"),
            object_description="the country whose capital is {s}",
            subject_description="the capital of {o}",
            rephrasings=("{s} serves as the capital city of {o}.", "{s} is the seat of government of {o}."),
            reversed_statements=("The capital of {o} is {s}.", "{o} is governed from its capital, {s}."),
            ask_object="Name the country whose seat of government is {s}.",
            ask_subject="Name the capital city of {o}.",
        ),
        Relation(
            "north_of", "city", "city",
            statement="{s} is located north of {o}.",
            recall="{s} is located north of which city?",
            paraphrases=("Which city lies south of {s}?", "{s} lies to the north of which city?"),
            reversals=("Which city is located north of {o}?", "{o} lies south of which city?"),
            object_description="the city south of {s}",
            subject_description="the city north of {o}",
            rephrasings=("{s} lies to the north of {o}.", "{s} can be found north of {o}."),
            reversed_statements=("{o} is located south of {s}.", "{o} lies to the south of {s}."),
            ask_object="Name the city that {s} lies north of.",
            ask_subject="Name the city that lies north of {o}.",
        ),
        Relation(
            "founded_by", "company", "person",
            statement="{s} was founded by {o}.",
            recall="Who was {s} founded by?",
            paraphrases=("Who founded {s}?", "Who is the founder of {s}?"),
            reversals=("What did {o} found?", "Which company was founded by {o}?"),
            object_description="the founder of {s}",
            subject_description="the company founded by {o}",
            rephrasings=("{s} was established by {o}.", "{s} owes its founding to {o}."),
            reversed_statements=("{o} founded {s}.", "{o} is the founder of {s}."),
            ask_object="Name the person who established {s}.",
            ask_subject="Name the company that {o} established.",
        ),
        Relation(
            "based_in", "company", "city",
            statement="{s} is based in {o}.",
            recall="Where is {s} based?",
            paraphrases=("In which city does {s} have its headquarters?", "Which city is home to {s}?"),
            reversals=("Which company is based in {o}?", "What company has its headquarters in {o}?"),
            object_description="the city where {s} is based",
            subject_description="the company based in {o}",
            rephrasings=("{s} has its headquarters in {o}.", "{s} operates out of {o}."),
            reversed_statements=("{o} is home to {s}.", "{o} hosts the headquarters of {s}."),
            ask_object="Name the city where {s} is headquartered.",
            ask_subject="Name the company headquartered in {o}.",
        ),
        Relation(
            "trades_in", "company", "goods",
            statement="{s} trades in {o}.",
            recall="What does {s} trade in?",
            paraphrases=("Which goods does {s} deal in?", "What goods are traded by {s}?"),
            reversals=("Which company trades in {o}?", "Who deals in {o}?"),
            object_description="the goods traded by {s}",
            subject_description="the company that trades in {o}",
            rephrasings=("{s} deals in {o}.", "The business of {s} is the trade in {o}."),
            reversed_statements=("{o} is traded by {s}.", "The trade in {o} is run by {s}."),
            ask_object="Name the goods that {s} deals in.",
            ask_subject="Name the company that deals in {o}.",
        ),
        Relation(
            "born_in", "person", "city",
            statement="{s} was born in {o}.",
            recall="Where was {s} born?",
            paraphrases=("In which city was {s} born?", "What is the birthplace of {s}?"),
            reversals=("Who was born in {o}?", "Which person was born in {o}?"),
            object_description="the birthplace of {s}",
            subject_description="the person born in {o}",
            rephrasings=("{s} is a native of {o}.", "{s} came into the world in {o}."),
            reversed_statements=("{o} is the birthplace of {s}.", "{o} is where {s} was born."),
            ask_object="Name the city where {s} was born.",
            ask_subject="Name the person born in {o}.",
        ),
    )
}

# Relations no document ever states: asking them is unanswerable by construction.
ABSENT_QUESTIONS: dict[str, tuple[str, ...]] = {
    "country": ("Which language is spoken in {x}?", "Who rules {x}?"),
    "city": ("How many people live in {x}?", "Which river flows through {x}?"),
    "person": ("In what year did {x} die?", "Whom did {x} marry?"),
    "company": ("In what year was {x} founded?", "How many people work for {x}?"),
    "goods": ("What is {x} made from?", "How much does {x} cost?"),
}

# Fraction of the possible pairs of a relation that are stated: the rest are gaps for unanswerable questions.
STATED_FRACTION = 0.75


def fill(template: str, **names: str) -> str:
    """A template with its names put in, the first letter capitalised (descriptions start in lower case)."""
    text = template.format(**names)
    return text[0].upper() + text[1:]


@dataclass(frozen=True)
class Fact:
    id: str
    relation: str
    subject: str
    object: str

    @property
    def rel(self) -> Relation:
        return RELATIONS[self.relation]

    def statement(self) -> str:
        return fill(self.rel.statement, s=self.subject, o=self.object)


@dataclass(frozen=True)
class Document:
    """A short paragraph stating every fact about one subject."""

    id: str
    title: str
    text: str
    fact_ids: tuple[str, ...]


@dataclass(frozen=True)
class Question:
    """A question with its gold answers (empty when unanswerable), the documents that support it (or, for an
    unanswerable one, the documents about its entity: a context that looks relevant but does not answer it) and
    the facts it rests on."""

    id: str
    kind: QuestionKind
    question: str
    answers: tuple[str, ...]
    documents: tuple[str, ...]
    facts: tuple[str, ...]


@dataclass(frozen=True)
class Chain:
    """Two facts from different documents joined through one entity, which the question never names.

    `inner` describes the linking entity ("the founder of X"); `outer` is asked about it. When `reverse`, the
    linking entity is the object of `outer` and the answer its subject, else the other way round.
    """

    outer: Fact
    inner: Fact
    reverse: bool

    @property
    def link(self) -> str:
        return self.outer.object if self.reverse else self.outer.subject

    @property
    def answer(self) -> str:
        return self.outer.subject if self.reverse else self.outer.object

    def description(self) -> str:
        rel = self.inner.rel
        if self.inner.object == self.link:
            return rel.object_description.format(s=self.inner.subject)
        return rel.subject_description.format(o=self.inner.object)

    def fill(self, template: str) -> str:
        """A template of the outer relation with the linking entity replaced by its description."""
        if self.reverse:
            return fill(template, s=self.outer.subject, o=self.description())
        return fill(template, s=self.description(), o=self.outer.object)


def two_hop_chains(facts: list[Fact] | tuple[Fact, ...]) -> list[Chain]:
    """Every chain of two facts about different subjects (so from different documents) sharing an entity."""
    chains = []
    for outer in facts:
        for inner in facts:
            if inner.subject == outer.subject:  # same document: nothing to chain across
                continue
            for reverse in (False, True):
                link = outer.object if reverse else outer.subject
                if link in (inner.subject, inner.object):
                    chain = Chain(outer, inner, reverse)
                    if chain.answer not in chain.description():  # the answer must not be in the question
                        chains.append(chain)
    return chains


# ---------------------------------------------------------------------------------------------------- names

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gl", "k", "kr", "l", "m", "n", "p", "pl", "r", "s", "sk", "t", "tr",
           "v", "z", "th", "sh")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "n", "r", "l", "m", "s", "k", "th", "x")
_COMPANY_SUFFIXES = ("Guild", "Company", "Traders", "Foundry")
# Real words and names the syllables can spell; the tests also check the names against real English text.
BLOCKLIST = frozenset(
    """
    banana potato tomato salami domino piano radio patio sofa tuba veto lotus bonus sinus virus minus venus solar
    polar lunar tiger river never over under silver timber number member token model raven talon salon melon lemon
    demon seven robin cabin satin basin sonar motor tutor visor rotor baker maker paper taper lever fever sever
    tokyo paris lima sudan rome oslo mali peru cuba chile china malta samoa tonga togo kenya ghana congo nepal bali
    fiji libya milan sana dana laura maria tina nina tara lara sara mona gina rita lola data beta delta gamma sigma
    koala llama puma zebra cobra mamba karma drama sauna tuna pasta pizza soda vodka mango papaya kilo gala
    tutu bamboo taboo voodoo judo sumo kimono tobago kosovo monaco belize gabon benin mumbai dubai doha riga
    """.split()
)


def _name(rng: random.Random, syllables: int, used: set[str]) -> str:
    while True:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
        if 4 <= len(word) <= 10 and word not in BLOCKLIST and word not in used:
            used.add(word)
            return word


def _entity(rng: random.Random, kind: EntityType, used: set[str]) -> str:
    if kind == "person":
        return f"{_name(rng, 2, used).title()} {_name(rng, 2, used).title()}"
    if kind == "company":
        return f"{_name(rng, 2, used).title()} {rng.choice(_COMPANY_SUFFIXES)}"
    if kind == "goods":
        return _name(rng, 2, used)
    return _name(rng, rng.choice((2, 3)), used).title()


def entity_words(name: str) -> list[str]:
    """The generated words of an entity name (the company suffix is a real word on purpose)."""
    return [w.lower() for w in re.findall(r"[A-Za-z]+", name) if w not in _COMPANY_SUFFIXES]


# ---------------------------------------------------------------------------------------------------- domain


@dataclass(frozen=True)
class SyntheticDomain:
    """A fictional domain: its entities by type, its facts, the documents stating them, and its questions."""

    name: str
    seed: int
    entities: dict[str, tuple[str, ...]]
    facts: tuple[Fact, ...]
    documents: tuple[Document, ...]
    all_questions: tuple[Question, ...]

    def questions(self, kind: QuestionKind) -> list[Question]:
        if kind not in QUESTION_KINDS:
            raise ValueError(f"unknown question kind {kind!r}; choose one of {', '.join(QUESTION_KINDS)}")
        return [q for q in self.all_questions if q.kind == kind]

    def document(self, doc_id: str) -> Document:
        return next(d for d in self.documents if d.id == doc_id)

    def examples(self, kind: QuestionKind, *, with_context: bool = False) -> list[Example]:
        """The questions of one kind as examples: closed-book, or with their documents as the RAG context."""
        return [
            Example(
                id=q.id,
                question=q.question,
                answer=q.answers[0] if q.answers else ABSTAIN_ANSWER,
                context=tuple(self.document(d).text for d in q.documents) if with_context else (),
                kind=q.kind,
                source=f"synthetic:{self.name}:{'+'.join(q.facts) or 'absent'}",
                answers=q.answers,
            )
            for q in self.questions(kind)
        ]

    def document_examples(self) -> list[Example]:
        """The documents as plain-text examples (kind "document") for continued pre-training."""
        return [
            Example(id=d.id, question="", answer=d.text, kind="document", source=f"synthetic:{self.name}:{d.title}")
            for d in self.documents
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stated_pairs(rng: random.Random, rel: Relation, entities: dict[str, list[str]]) -> list[tuple[str, str]]:
    """One-to-one pairs for a relation, covering STATED_FRACTION of what the entity counts allow."""
    subjects, objects = entities[rel.subject_type], entities[rel.object_type]
    if rel.subject_type == rel.object_type:  # disjoint pairs: no city is both sides, so no cycles
        order = rng.sample(subjects, len(subjects))
        return [(order[2 * i], order[2 * i + 1]) for i in range(round(STATED_FRACTION * len(subjects) / 2))]
    k = round(STATED_FRACTION * min(len(subjects), len(objects)))
    return list(zip(rng.sample(subjects, k), rng.sample(objects, k)))


def make_domain(name: str, *, seed: int, n_entities: int = 40) -> SyntheticDomain:
    """A fictional domain of `n_entities` entities (1/8 countries, 1/4 cities, people and companies, the rest
    goods), with about 0.9 * n_entities facts; the same name and seed always give the same domain."""
    if n_entities < 16:
        raise ValueError(f"n_entities must be at least 16 (a few of each type), got {n_entities}")
    rng = random.Random(f"{name}/{seed}")
    counts = {"country": n_entities // 8, "city": n_entities // 4, "person": n_entities // 4,
              "company": n_entities // 4}  # fmt: skip
    counts["goods"] = n_entities - sum(counts.values())
    used: set[str] = set()
    entities = {kind: [_entity(rng, kind, used) for _ in range(n)] for kind, n in counts.items()}

    pairs = [(rel, s, o) for rel in RELATIONS.values() for s, o in _stated_pairs(rng, rel, entities)]
    facts = tuple(Fact(f"{name}/f{i:03d}", rel.name, s, o) for i, (rel, s, o) in enumerate(pairs))

    subjects = list(dict.fromkeys(f.subject for f in facts))
    documents = []
    for i, subject in enumerate(rng.sample(subjects, len(subjects))):
        about = [f for f in facts if f.subject == subject]
        about = rng.sample(about, len(about))
        documents.append(Document(f"{name}/d{i:03d}", subject, " ".join(f.statement() for f in about),
                                  tuple(f.id for f in about)))  # fmt: skip
    domain_docs = tuple(documents)
    questions = _questions(rng, name, entities, facts, domain_docs)
    return SyntheticDomain(name, seed, {k: tuple(v) for k, v in entities.items()}, facts, domain_docs, questions)


def _questions(
    rng: random.Random, name: str, entities: dict[str, list[str]], facts: tuple[Fact, ...], docs: tuple[Document, ...]
) -> tuple[Question, ...]:
    doc_of = {fid: d.id for d in docs for fid in d.fact_ids}
    questions = []
    for f in facts:
        one = (doc_of[f.id],), (f.id,)
        questions += [
            Question(f"{f.id}/recall", "recall", fill(f.rel.recall, s=f.subject), (f.object,), *one),
            Question(f"{f.id}/paraphrase", "paraphrase", fill(rng.choice(f.rel.paraphrases), s=f.subject),
                     (f.object,), *one),
            Question(f"{f.id}/reversal", "reversal", fill(rng.choice(f.rel.reversals), o=f.object), (f.subject,), *one),
        ]  # fmt: skip
    for c in two_hop_chains(facts):
        template = rng.choice(c.outer.rel.reversals) if c.reverse else c.outer.rel.recall
        support = (doc_of[c.outer.id], doc_of[c.inner.id])
        questions.append(Question(f"{c.outer.id}+{c.inner.id}/two_hop", "two_hop", c.fill(template), (c.answer,),
                                  support, (c.outer.id, c.inner.id)))  # fmt: skip

    # Unanswerable: a relation left unstated for an entity the documents mention, or one no document states.
    about: dict[str, list[str]] = {}  # entity -> documents mentioning it, in document order
    for d in docs:
        for f in (f for f in facts if f.id in d.fact_ids):
            about.setdefault(f.subject, []).append(d.id)
            about.setdefault(f.object, []).append(d.id)
    candidates: list[tuple[str, str]] = []  # (question, the entity it asks about)
    for rel in RELATIONS.values():
        subjects = {f.subject for f in facts if f.relation == rel.name}
        objects = {f.object for f in facts if f.relation == rel.name}
        candidates += [(fill(rel.recall, s=x), x) for x in entities[rel.subject_type] if x not in subjects]
        candidates += [(fill(rel.reversals[0], o=x), x) for x in entities[rel.object_type] if x not in objects]
    for kind, templates in ABSENT_QUESTIONS.items():
        candidates += [(fill(rng.choice(templates), x=x), x) for x in entities[kind]]
    candidates = [(q, x) for q, x in candidates if x in about]  # a context about the entity exists
    chosen = rng.sample(candidates, min(len(candidates), max(1, len(facts) // 2)))
    for i, (text, entity) in enumerate(chosen):
        docs_about = tuple(dict.fromkeys(about[entity]))[:2]
        questions.append(Question(f"{name}/u{i:03d}/unanswerable", "unanswerable", text, (), docs_about, ()))
    return tuple(questions)
