"""Synthetic fictional domains: determinism, unknowable names, and questions whose answers hold by construction."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from council.prompts import ABSTAIN_ANSWER
from specialists.synthetic import BLOCKLIST, QUESTION_KINDS, SyntheticDomain, entity_words, make_domain

SQUAD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "squad2" / "dev-v2.0.json"


@pytest.fixture(scope="module")
def domain() -> SyntheticDomain:
    return make_domain("veltharan", seed=0)


def _names(d: SyntheticDomain) -> list[str]:
    return [x for names in d.entities.values() for x in names]


def test_same_seed_same_domain_other_seed_or_name_other_domain(domain):
    assert make_domain("veltharan", seed=0) == domain
    assert make_domain("veltharan", seed=1).facts != domain.facts
    assert make_domain("orrim", seed=0).facts != domain.facts


def test_same_domain_in_another_process_with_another_hash_seed(domain):
    # set order and str hashes change between processes: the generator must not depend on them
    code = (
        "import json; from specialists.synthetic import make_domain; "
        "print(json.dumps(make_domain('veltharan', seed=0).to_dict()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == json.loads(json.dumps(domain.to_dict()))


def test_names_are_unique_generated_and_absent_from_real_text(domain):
    names = _names(domain)
    assert len(set(names)) == len(names) == 40
    words = [w for x in names for w in entity_words(x)]
    assert len(set(words)) == len(words)  # no name word is reused, so no question is ambiguous
    assert not set(words) & BLOCKLIST
    if SQUAD.exists():  # 1.6 MB of real English: a pre-trained model has seen none of these words
        english = set(re.findall(r"[a-z]+", SQUAD.read_text().lower()))
        for seed in range(5):
            assert not {w for x in _names(make_domain("veltharan", seed=seed)) for w in entity_words(x)} & english


def test_every_fact_is_stated_in_exactly_one_document(domain):
    for f in domain.facts:
        holders = [d for d in domain.documents if f.id in d.fact_ids]
        assert len(holders) == 1 and f.statement() in holders[0].text and holders[0].title == f.subject


def test_relations_are_one_to_one(domain):
    for relation in {f.relation for f in domain.facts}:
        facts = [f for f in domain.facts if f.relation == relation]
        assert len({f.subject for f in facts}) == len({f.object for f in facts}) == len(facts)


def test_question_kinds_are_all_present(domain):
    counts = {k: len(domain.questions(k)) for k in QUESTION_KINDS}
    assert counts["recall"] == counts["paraphrase"] == counts["reversal"] == len(domain.facts)
    assert counts["two_hop"] > 10 and counts["unanswerable"] > 5
    with pytest.raises(ValueError, match="unknown question kind 'trivia'; choose one of recall, "):
        domain.questions("trivia")  # type: ignore[arg-type]


def test_recall_asks_forward_and_reversal_asks_backward(domain):
    facts = {f.id: f for f in domain.facts}
    for kind in ("recall", "paraphrase", "reversal"):
        for q in domain.questions(kind):
            f = facts[q.facts[0]]
            given, wanted = (f.object, f.subject) if kind == "reversal" else (f.subject, f.object)
            assert q.answers == (wanted,) and given in q.question and wanted not in q.question
    recall = {q.facts: q.question for q in domain.questions("recall")}
    paraphrase = {q.facts: q.question for q in domain.questions("paraphrase")}
    assert all(recall[k] != paraphrase[k] for k in recall)


def test_two_hop_answers_follow_from_two_documents(domain):
    facts = {f.id: f for f in domain.facts}
    by_pair = {(f.relation, f.subject): f.object for f in domain.facts}
    for q in domain.questions("two_hop"):
        outer, inner = (facts[i] for i in q.facts)
        assert len(set(q.documents)) == 2 and outer.subject != inner.subject
        link = ({outer.subject, outer.object} & {inner.subject, inner.object}).pop()
        assert link not in q.question  # the bridge entity must be deduced, not read
        other = inner.subject if link == inner.object else inner.object
        assert other in q.question
        # following the two facts from the named entity lands on the answer
        answer = by_pair[(outer.relation, link)] if link == outer.subject else outer.subject
        assert q.answers == (answer,) and answer not in q.question


def test_unanswerable_questions_have_no_supporting_fact(domain):
    answerable = {q.question for k in ("recall", "paraphrase", "reversal") for q in domain.questions(k)}
    for q in domain.questions("unanswerable"):
        assert q.answers == () and q.facts == () and q.question not in answerable
        assert q.documents  # a context about the same entity, which must not be mistaken for an answer
    for e in domain.examples("unanswerable", with_context=True):
        assert e.answer == ABSTAIN_ANSWER and e.context and e.kind == "unanswerable"


def test_examples_with_and_without_context(domain):
    closed = domain.examples("two_hop")
    rag = domain.examples("two_hop", with_context=True)
    assert all(e.context == () for e in closed) and [e.id for e in closed] == [e.id for e in rag]
    for e in rag:
        assert len(e.context) == 2 and e.messages()[1]["content"].startswith("Context:\n[1] ")
    for e in domain.examples("reversal", with_context=True):
        assert e.answer in e.context[0]
    docs = domain.document_examples()
    assert [d.text() for d in docs] == [d.text for d in domain.documents]


def test_too_small_domain_is_refused():
    with pytest.raises(ValueError, match="n_entities must be at least 16"):
        make_domain("tiny", seed=0, n_entities=8)
