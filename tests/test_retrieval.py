"""The document store: reading, splitting, hybrid search, persistence, corruption, packing."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from council.embedder import get_embedder
from tests.conftest import HashEmbedder
from council.retrieval import (
    Document,
    DocumentError,
    DocumentStore,
    Hit,
    Passage,
    RetrievalConfig,
    StoreError,
    pack,
    read_documents,
    split_passages,
)

DOCS = [
    Document("The Normans conquered England in 1066 under William the Conqueror.", "history.txt", "Normans"),
    Document("Antibodies are proteins that bind to pathogens and mark them for destruction.", "bio.txt", "Immune"),
    Document("The 1973 oil crisis began when OAPEC proclaimed an oil embargo.", "econ.txt", "Oil"),
    Document("The Scottish Parliament sits in Holyrood, Edinburgh, and passes laws for Scotland.", "law.txt"),
]


@pytest.fixture
def store() -> DocumentStore:
    s = DocumentStore(embedder=HashEmbedder())
    s.add_documents(DOCS)
    return s


@pytest.fixture(scope="session")
def real_embedder():
    return get_embedder()


# ---- splitting


def test_short_paragraphs_merge_and_long_ones_become_overlapping_windows():
    long = " ".join(f"Sentence {i} talks about topic {i} in detail." for i in range(30))  # 7 words each
    text = f"# Title\n\nA short intro.\n\n{long}\n\nA closing line."
    parts = split_passages(text, max_words=30, overlap_sentences=1)
    assert parts[0] == "# Title\n\nA short intro."  # short neighbours merged
    assert parts[-1] == "A closing line."  # not merged into a window of the long paragraph
    windows = parts[1:-1]
    assert all(len(p.split()) <= 30 for p in parts)
    assert all(p in text for p in parts)  # exact slices of the document
    for a, b in zip(windows, windows[1:]):
        assert a.split(". ")[-1].rstrip(".") in b  # the last sentence of a window opens the next
    covered = " ".join(windows)
    assert all(f"Sentence {i} " in covered for i in range(30))


def test_a_sentence_longer_than_max_words_is_cut_into_word_chunks():
    text = " ".join(["word"] * 50)
    parts = split_passages(text, max_words=20, overlap_sentences=0)
    assert [len(p.split()) for p in parts] == [20, 20, 10]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"fusion='mean': choose 'rrf' or 'weighted'"):
        RetrievalConfig(fusion="mean")
    with pytest.raises(ValueError, match="dense_weight=1.5"):
        RetrievalConfig(dense_weight=1.5)
    assert RetrievalConfig.from_dict(RetrievalConfig(max_words=80).to_dict()) == RetrievalConfig(max_words=80)
    with pytest.raises(ValueError, match=r"unknown retrieval config key\(s\) \['words'\]"):
        RetrievalConfig.from_dict({"words": 3})


# ---- reading files


def test_reads_text_markdown_jsonl_and_squad(tmp_path):
    (tmp_path / "notes.txt").write_text("Plain text notes.", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "guide.md").write_text("# The Guide\n\nSome guidance.", encoding="utf-8")
    (tmp_path / "recs.jsonl").write_text(
        json.dumps({"id": "r1", "text": "First record.", "title": "One"}) + "\n\n"
        + json.dumps({"text": "Second record.", "source": "wiki/Second"}) + "\n",
        encoding="utf-8",
    )
    squad = {"data": [{"title": "Force", "paragraphs": [{"context": "A force is a push.", "qas": []},
                                                        {"context": "Mass resists it.", "qas": []}]}]}
    (tmp_path / "dev.json").write_text(json.dumps(squad), encoding="utf-8")
    docs, skipped = read_documents(tmp_path)
    assert skipped == []
    by_source = {d.source: d for d in docs}
    assert set(by_source) == {"notes.txt", "sub/guide.md", "recs.jsonl#r1", "wiki/Second", "dev.json#Force/0",
                              "dev.json#Force/1"}
    assert by_source["sub/guide.md"].title == "The Guide"
    assert by_source["recs.jsonl#r1"].title == "One"
    assert by_source["dev.json#Force/1"] == Document("Mass resists it.", "dev.json#Force/1", "Force")


def test_empty_and_non_utf8_files_warn_naming_the_file_or_raise(tmp_path, caplog):
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "good.txt").write_text("Good text.", encoding="utf-8")
    docs, skipped = read_documents(tmp_path)
    assert [d.source for d in docs] == ["good.txt"]
    assert [r.getMessage() for r in caplog.records] == [f"skipped {m}" for m in skipped]  # each logged once
    assert skipped[0].endswith("empty.txt: empty document")
    assert skipped[1].endswith("latin1.txt: not UTF-8 text (byte 0xe9 at offset 3); re-save it as UTF-8")
    with pytest.raises(DocumentError, match=r"latin1\.txt: not UTF-8 text"):
        read_documents(tmp_path / "latin1.txt", on_error="raise")
    with pytest.raises(FileNotFoundError, match="missing.md: no such file"):
        read_documents(tmp_path / "missing.md")


def test_bad_jsonl_lines_and_unknown_formats_are_reported(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "ok"}\n{not json}\n{"title": "no text"}\n', encoding="utf-8")
    (tmp_path / "b.pdf").write_bytes(b"%PDF")
    (tmp_path / "c.json").write_text('{"rows": []}', encoding="utf-8")
    docs, skipped = read_documents(tmp_path)
    assert [d.text for d in docs] == ["ok"]
    assert [s.split(": ", 1)[0].rsplit("/", 1)[-1] for s in skipped] == ["a.jsonl:2", "a.jsonl:3", "b.pdf", "c.json"]
    with pytest.raises(DocumentError, match=r"a\.jsonl:2: invalid JSON"):
        read_documents(tmp_path / "a.jsonl", on_error="raise")
    with pytest.raises(DocumentError, match=r"c\.json: not SQuAD-format JSON"):
        read_documents(tmp_path / "c.json", on_error="raise")


# ---- search


def test_the_right_passage_ranks_first_in_every_mode(store):
    question = "Who conquered England in 1066?"
    for mode in ("hybrid", "sparse", "dense"):
        hits = store.search(question, k=2, mode=mode)
        assert hits[0].passage.source == "history.txt", mode
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    hit = store.search("oil embargo", k=1)[0]
    assert hit.passage.title == "Oil" and hit.sparse_score > 0 and 0 < hit.dense_score <= 1


def test_both_fusions_agree_on_a_clear_winner(store):
    hits = store.search("Where does the Scottish Parliament sit?", k=4)  # weighted: best in both = 1.0
    assert hits[0].passage.source == "law.txt" and hits[0].score == pytest.approx(1.0)
    rrf = DocumentStore(RetrievalConfig(fusion="rrf"), embedder=HashEmbedder())
    rrf.add_documents(DOCS)
    hits = rrf.search("Where does the Scottish Parliament sit?", k=4)  # first in both rankings: 2 x 0.5/(60+1)
    assert hits[0].passage.source == "law.txt" and hits[0].score == pytest.approx(1 / 61)


def test_sparse_mode_returns_only_term_matches_and_k_is_capped(store):
    assert [h.passage.source for h in store.search("antibodies", k=3, mode="sparse")] == ["bio.txt"]
    assert len(store.search("England", k=50)) == len(store)


def test_bad_questions_and_empty_store_raise_clearly(store):
    with pytest.raises(ValueError, match=r"empty question '  ': give a non-blank question"):
        store.search("  ")
    with pytest.raises(ValueError, match="mode='fuzzy'"):
        store.search("England", mode="fuzzy")
    with pytest.raises(ValueError, match="the store holds no passages"):
        DocumentStore(embedder=HashEmbedder()).search("England")


def test_ids_are_stable_and_re_adding_is_a_no_op(store):
    again = DocumentStore(embedder=HashEmbedder())
    again.add_documents(list(reversed(DOCS)))
    assert {p.id for p in again.passages} == {p.id for p in store.passages}
    report = store.add_documents(DOCS[:2])
    assert (report.passages_added, report.duplicates, len(store)) == (0, 2, 4)
    report = store.add_documents([Document(" ", "blank.txt")])
    assert report.skipped == ["blank.txt: empty document"]
    with pytest.raises(DocumentError, match="blank.txt: empty document"):
        store.add_documents([Document(" ", "blank.txt")], on_error="raise")


# ---- persistence


def test_saved_store_reloads_identical_results_and_accepts_new_documents(store, tmp_path):
    store.save(tmp_path / "idx")
    loaded = DocumentStore.load(tmp_path / "idx", embedder=HashEmbedder())
    assert loaded.passages == store.passages and loaded.config == store.config
    for q in ("Who conquered England?", "oil crisis embargo", "laws for Scotland"):
        assert [h.to_dict() for h in loaded.search(q, k=3)] == [h.to_dict() for h in store.search(q, k=3)]
    loaded.add_documents([Document("Harvard was founded in 1636 in Cambridge, Massachusetts.", "harvard.txt")])
    assert loaded.search("When was Harvard founded?", k=1)[0].passage.source == "harvard.txt"
    loaded.save(tmp_path / "idx")  # overwriting a store folder is allowed
    assert len(DocumentStore.load(tmp_path / "idx", embedder=HashEmbedder())) == 5


def test_truncated_embeddings_raise_naming_the_file(store, tmp_path):
    folder = store.save(tmp_path / "idx")
    data = (folder / "embeddings.npy").read_bytes()
    (folder / "embeddings.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match=r"embeddings\.npy: checksum differs"):
        DocumentStore.load(folder, embedder=HashEmbedder())
    # Past the checksum (manifest rewritten to match), the shape check still refuses the file.
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["checksums"]["embeddings.npy"] = hashlib.sha256((folder / "embeddings.npy").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"embeddings\.npy: unreadable"):
        DocumentStore.load(folder, embedder=HashEmbedder())


def test_incomplete_or_foreign_folders_are_refused(store, tmp_path):
    folder = store.save(tmp_path / "idx")
    (folder / "bm25" / "vocab.index.json").unlink()
    with pytest.raises(StoreError, match=r"vocab\.index\.json: missing"):
        DocumentStore.load(folder, embedder=HashEmbedder())
    (folder / "manifest.json").unlink()
    with pytest.raises(StoreError, match=r"manifest\.json: missing; not a saved store"):
        DocumentStore.load(folder, embedder=HashEmbedder())
    with pytest.raises(StoreError, match="folder is not empty and holds no manifest.json"):
        store.save(folder)
    good = store.save(tmp_path / "good")
    with pytest.raises(StoreError, match=r"built with embedder 'hash-bow-256' \(dim 256\), not 'hash-bow-64'"):
        DocumentStore.load(good, embedder=HashEmbedder(64))
    (good / "manifest.json").write_text("{")
    with pytest.raises(StoreError, match=r"manifest\.json: not valid JSON"):
        DocumentStore.load(good, embedder=HashEmbedder())


def test_empty_store_round_trips_as_empty(tmp_path):
    DocumentStore(embedder=HashEmbedder()).save(tmp_path / "empty")
    assert len(DocumentStore.load(tmp_path / "empty", embedder=HashEmbedder())) == 0


# ---- packing


def test_pack_keeps_rank_order_ids_and_the_budget():
    sizes = [10, 30, 5, 8]  # words per passage, in rank order
    hits = [
        Hit(Passage(f"p{i}", " ".join(["w"] * n), "src"), score=1.0 - i / 10, sparse_score=0.0, dense_score=0.5)
        for i, n in enumerate(sizes)
    ]
    words = lambda text: len(text.split())  # noqa: E731  a stand-in token counter
    ctx = pack(hits, 25, words, overhead_tokens=2)  # p0 (12) fits, p1 (32) does not, p2 (7) fits, p3 (10) not
    assert ctx.ids == ["p0", "p2"] and ctx.dropped == ["p1", "p3"]
    assert ctx.scores == [1.0, 0.8] and ctx.token_count == 19 and ctx.budget_tokens == 25
    assert ctx.texts[1] == "w w w w w"
    assert ctx.to_dict()["passages"][0] == {"id": "p0", "text": hits[0].passage.text, "source": "src", "title": None}
    assert pack(hits, 4, words).ids == []  # nothing fits: an empty context, not an error
    with pytest.raises(ValueError, match="budget_tokens=0: must be at least 1"):
        pack(hits, 0, words)


# ---- the real embedder


@pytest.mark.slow
def test_real_embedder_vectors_are_unit_float32(real_embedder):
    v = real_embedder.encode(["The immune system fights infection.", "Paris is in France."])
    assert v.shape == (2, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert real_embedder.encode([]).shape == (0, 384)


@pytest.mark.slow
def test_real_embedder_finds_a_paraphrase_with_no_shared_words(real_embedder, tmp_path):
    s = DocumentStore(embedder=real_embedder)
    s.add_documents(DOCS + [Document("The physician prescribed tablets to treat the patient's hypertension.", "med")])
    hit = s.search("What drug did the doctor give for high blood pressure?", k=1, mode="dense")[0]
    assert hit.passage.source == "med"
    s.save(tmp_path / "idx")
    loaded = DocumentStore.load(tmp_path / "idx")  # default embedder: the shared MiniLM
    assert loaded.search("medicine for high blood pressure", k=1)[0].passage.source == "med"
