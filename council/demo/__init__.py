"""The demo's own corpus, shipped inside the package so the demo runs where ../shared does not exist.

`corpus.jsonl` holds the paragraphs of the 12 Wikipedia articles of the shared SQuAD 2.0 dev subset
(CC BY-SA 4.0; see ATTRIBUTION.md). Its document store is built on first use into the cache folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)
CORPUS = Path(__file__).with_name("corpus.jsonl")


def write_corpus(squad_file: str | Path, out: str | Path = CORPUS) -> int:
    """Write the paragraphs of a SQuAD-format file as corpus JSONL (text, title, source); returns the count."""
    data = json.loads(Path(squad_file).read_text(encoding="utf-8"))["data"]
    rows = [{"text": p["context"], "title": a["title"],
             "source": f"https://en.wikipedia.org/wiki/{a['title']}#p{i}"}
            for a in data for i, p in enumerate(a["paragraphs"])]
    Path(out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def demo_store(cache_dir: str | Path | None = None):
    """The demo's DocumentStore: loaded from the cache, or built from the packaged corpus the first time."""
    from council.base_model import cache_lock, default_cache_dir
    from council.retrieval import DocumentStore

    folder = Path(cache_dir or default_cache_dir()) / "stores" / "demo"
    if (folder / "manifest.json").is_file():
        return DocumentStore.load(folder)
    with cache_lock(folder):
        if (folder / "manifest.json").is_file():  # indexed by another process while this one waited
            return DocumentStore.load(folder)
        logger.warning("council: indexing the demo corpus into %s (once)...", folder)
        store = DocumentStore()
        store.add(CORPUS, on_error="raise")
        store.save(folder)
    return store
