"""Retrieval benchmark: does the shared store find the paragraph that holds the answer, and how fast?

    recall_at_1 / recall_at_5   answerable SQuAD 2.0 dev questions whose gold paragraph (any passage cut from
                                it) is in the top 1 / top 5; the store holds every shared SQuAD paragraph, the
                                unlabelled articles included as distractors. Goal: recall@5 >= 0.9.
    query_ms_p50_10k            one search (question embedding included) on a 10,000-passage store. Goal < 50 ms.
    ingest_seconds_10k          split, embed and index those 10,000 passages. Goal < 120 s.

The 10k store is real text: SQuAD paragraphs, PubMedQA abstracts and conclusions, HaluEval knowledge, topped up
with sentence windows of the same texts. `--quick` uses 4 articles, 300 questions and a 2,000-passage store.

    .venv/bin/python benchmarks/retrieval.py [--quick] [--json PATH] [--squad PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from council.embedder import get_embedder  # noqa: E402
from benchmarks.common import write_json  # noqa: E402
from council.retrieval import Document, DocumentStore, RetrievalConfig, read_documents, split_passages  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
GOALS = {"recall_at_5": (">=", 0.9), "query_ms_p50_10k": ("<", 50.0), "ingest_seconds_10k": ("<", 120.0)}


class QueryCache:
    """Embeds each question once although the benchmark searches it in four modes (the store's encoder)."""

    def __init__(self, encoder) -> None:
        self.encoder, self.name, self.dim = encoder, encoder.name, encoder.dim
        self._last: tuple[str, np.ndarray] | None = None

    def encode(self, texts):
        if len(texts) != 1:
            return self.encoder.encode(texts)
        if self._last is None or self._last[0] != texts[0]:
            self._last = (texts[0], self.encoder.encode(texts))
        return self._last[1]


def squad_recall(squad: Path, *, quick: bool) -> dict:
    """Build the SQuAD store with the library's own reader, then score every answerable question."""
    unlabelled = squad.with_name("unlabelled-v2.0.json")
    dev = json.loads(squad.read_text(encoding="utf-8"))
    store = DocumentStore(embedder=QueryCache(get_embedder()))
    t0 = time.perf_counter()
    if quick:  # 4 labelled articles + 6 unlabelled ones, through the same reader
        docs, _ = read_documents([squad, unlabelled])
        keep = {a["title"] for a in dev["data"][:4]} | {
            a["title"] for a in json.loads(unlabelled.read_text(encoding="utf-8"))["data"][:6]
        }
        store.add_documents([d for d in docs if d.title in keep])
        articles = dev["data"][:4]
    else:
        store.add([squad, unlabelled], on_error="raise")
        articles = dev["data"]
    build_s = time.perf_counter() - t0
    questions = [
        (q["question"], f"{squad.name}#{a['title']}/{i}")
        for a in articles
        for i, p in enumerate(a["paragraphs"])
        for q in p["qas"]
        if not q.get("is_impossible")
    ]
    if quick:
        questions = questions[:: max(1, len(questions) // 300)][:300]
    other = "rrf" if store.config.fusion == "weighted" else "weighted"
    runs = {"hybrid": store.config, f"hybrid_{other}": replace(store.config, fusion=other)}
    ranks: dict[str, list[int]] = {name: [] for name in (*runs, "sparse", "dense")}
    for question, gold in questions:
        for name in ranks:
            store.config = runs.get(name, runs["hybrid"])
            mode = name if name in ("sparse", "dense") else "hybrid"
            sources = [h.passage.source for h in store.search(question, k=5, mode=mode)]
            ranks[name].append(sources.index(gold) if gold in sources else 5)
    out = {"squad_store_passages": len(store), "squad_store_build_seconds": round(build_s, 1),
           "questions": len(questions), "fusion": runs["hybrid"].fusion}
    for name, r in ranks.items():
        prefix = "" if name == "hybrid" else f"{name}_"
        out[f"{prefix}recall_at_1"] = round(float(np.mean(np.array(r) < 1)), 4)
        out[f"{prefix}recall_at_5"] = round(float(np.mean(np.array(r) < 5)), 4)
    return out


def _sentence_windows(text: str, size: int) -> list[str]:
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text.strip())
    return [" ".join(sentences[i : i + size]) for i in range(0, len(sentences) - size + 1, size)]


def timing_corpus(squad: Path, n: int) -> list[Document]:
    """n passage-sized documents of real text (each splits into exactly one passage)."""
    texts: list[tuple[str, str]] = []
    for file in (squad, squad.with_name("unlabelled-v2.0.json")):
        for a in json.loads(file.read_text(encoding="utf-8"))["data"]:
            texts += [(f"squad/{a['title']}", p["context"]) for p in a["paragraphs"]]
    pubmed = json.loads((DATASETS / "pubmedqa" / "ori_pqal.json").read_text(encoding="utf-8"))
    for pmid, item in pubmed.items():
        texts += [(f"pubmed/{pmid}", c) for c in item["CONTEXTS"]] + [(f"pubmed/{pmid}/long", item["LONG_ANSWER"])]
    for line in (DATASETS / "halueval_qa" / "qa_one-turn_data.json").read_text(encoding="utf-8").splitlines():
        texts.append(("halueval", json.loads(line)["knowledge"]))
    # Whole texts first, then two-sentence windows of them (different passages of the same real prose).
    pieces = [(src, p) for src, t in texts for p in split_passages(t)]
    pieces += [(f"{src}/w", w) for src, t in texts for w in _sentence_windows(t, 2)]
    seen: set[str] = set()
    docs = []
    for src, text in pieces:
        if text not in seen and 5 <= len(text.split()) <= RetrievalConfig().max_words:
            seen.add(text)
            docs.append(Document(text, f"{src}#{len(docs)}"))
    if len(docs) < n:
        raise SystemExit(f"only {len(docs)} distinct passages of real text, {n} asked for")
    return docs[:n]


def timing(squad: Path, n: int, queries: int) -> dict:
    docs = timing_corpus(squad, n)
    store = DocumentStore(embedder=get_embedder())
    t0 = time.perf_counter()
    store.add_documents(docs)
    ingest = time.perf_counter() - t0
    assert len(store) == n, f"{len(store)} passages, expected {n}"
    dev = json.loads(squad.read_text(encoding="utf-8"))
    questions = [q["question"] for a in dev["data"] for p in a["paragraphs"] for q in p["qas"]][::7][:queries]
    for q in questions[:5]:  # warm-up: first calls allocate torch buffers
        store.search(q, k=5)
    times = []
    for q in questions:
        t = time.perf_counter()
        store.search(q, k=5)
        times.append((time.perf_counter() - t) * 1000)
    size = f"{n // 1000}k"
    return {
        f"ingest_seconds_{size}": round(ingest, 1),
        f"query_ms_p50_{size}": round(statistics.median(times), 2),
        f"query_ms_p95_{size}": round(float(np.percentile(times, 95)), 2),
        "timing_queries": len(times),
    }


def markdown(results: dict) -> str:
    lines = ["| metric | value | goal |", "|---|---|---|"]
    for key, value in results.items():
        goal = GOALS.get(key)
        mark = ""
        if goal and isinstance(value, int | float):
            ok = value >= goal[1] if goal[0] == ">=" else value < goal[1]
            mark = f"{goal[0]} {goal[1]} {'met' if ok else 'MISSED'}"
        lines.append(f"| {key} | {value} | {mark} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 articles, 300 questions, a 2,000-passage store")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--squad", type=Path, default=DATASETS / "squad2" / "dev-v2.0.json",
                        help="SQuAD 2.0 dev file; unlabelled-v2.0.json is read from the same folder")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    results = {"mode": "quick" if args.quick else "full"}
    results |= squad_recall(args.squad, quick=args.quick)
    print(f"recall done after {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    results |= timing(args.squad, 2000 if args.quick else 10_000, 50 if args.quick else 200)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(markdown(results))
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
