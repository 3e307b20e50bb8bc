"""Retrieval: the one document store the whole council shares, queried once per question.

    files ──► read_documents ──► Document ──► split_passages ──► Passage (stable id, source)
                                                                    │
                        BM25 (bm25s) sparse index ◄─────────────────┤
                        normalised MiniLM vectors (numpy) ◄─────────┘
    question ──► DocumentStore.search ──► Hit (fused, sparse and dense scores) ──► pack ──► Context

Why numpy and not faiss for the dense half: the store holds 10k-100k passages of 384 floats (15-150 MB); one
exact matrix-vector product streams them in about 1 ms per 10k passages on this CPU, less than embedding the
question (about 7-10 ms), and is exact, persistable with `np.save`, and adds no dependency. An approximate
index starts paying off at millions of passages.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import bm25s
import numpy as np

from council import strict
from council.embedder import MODEL_NAME, TextEncoder, get_embedder

OnError = Literal["warn", "raise"]
Fusion = Literal["rrf", "weighted"]
SearchMode = Literal["hybrid", "sparse", "dense"]

FORMAT_NAME, FORMAT_VERSION = "council-document-store", 1
logger = logging.getLogger(__name__)
SUFFIXES = (".txt", ".md", ".jsonl", ".json")
_MANIFEST, _PASSAGES, _EMBEDDINGS, _BM25 = "manifest.json", "passages.jsonl", "embeddings.npy", "bm25"


class DocumentError(ValueError):
    """A document that cannot be ingested: unreadable, empty, not UTF-8, or of an unknown format."""


class StoreError(ValueError):
    """A saved store folder that is missing, incomplete or corrupt."""


# -----------------------------------------------------------------------------
# data at the boundaries


@dataclass(frozen=True)
class Document:
    """Text to ingest, before it is split into passages."""

    text: str
    source: str  # where it came from: a file, or file#locator for one record of a file
    title: str | None = None


@dataclass(frozen=True)
class Passage:
    """A retrievable piece of a document; `id` is what a verdict cites."""

    id: str
    text: str
    source: str
    title: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Hit:
    """A passage found by a search, with the fused score and both scores it was fused from."""

    passage: Passage
    score: float  # what the hits are ordered by (RRF, weighted, or the single mode's own score)
    sparse_score: float  # raw BM25; 0.0 when no query term occurs in the passage
    dense_score: float  # cosine similarity of question and passage embeddings

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Context:
    """The passages every chosen specialist reads, packed into a token budget, best first."""

    passages: list[Passage]
    scores: list[float]
    token_count: int
    budget_tokens: int
    dropped: list[str] = field(default_factory=list)  # ids of hits that did not fit the budget

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.passages]

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.passages]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class IngestReport:
    """What one call to `DocumentStore.add` or `add_documents` did."""

    documents: int
    passages_added: int
    duplicates: int  # passages whose id was already in the store (same source and text)
    skipped: list[str] = field(default_factory=list)  # one message per skipped document, naming it

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RetrievalConfig:
    """How documents are split and how the two searches are fused. Saved in the store's manifest."""

    max_words: int = 120  # about 160 tokens: 4-6 passages fit a 1k-token context
    overlap_sentences: int = 1  # sentences repeated between windows of a long paragraph, so no fact is cut in two
    fusion: Fusion = "weighted"  # see DocumentStore.search for why
    dense_weight: float = 0.5  # share of the dense score in the fused score (1 - share for BM25)
    rrf_k: int = 60  # the usual RRF constant: damps the difference between rank 1 and rank 2
    candidates: int = 100  # top passages taken from each ranking before fusing

    def __post_init__(self) -> None:
        if self.max_words < 8:
            raise ValueError(f"max_words={self.max_words!r}: must be at least 8 words")
        if not 0 <= self.overlap_sentences < 5:
            raise ValueError(f"overlap_sentences={self.overlap_sentences!r}: must be 0 to 4")
        if self.fusion not in ("rrf", "weighted"):
            raise ValueError(f"fusion={self.fusion!r}: choose 'rrf' or 'weighted'")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ValueError(f"dense_weight={self.dense_weight!r}: must be between 0 and 1")
        if self.rrf_k < 1 or self.candidates < 1:
            raise ValueError(f"rrf_k={self.rrf_k!r}, candidates={self.candidates!r}: both must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RetrievalConfig:
        return strict.from_dict(cls, data, what="retrieval config")


# -----------------------------------------------------------------------------
# reading files into documents


def _problem(message: str, on_error: OnError, skipped: list[str]) -> None:
    """Raise, or log and remember, one document that cannot be ingested (the report lists it too)."""
    if on_error == "raise":
        raise DocumentError(message)
    skipped.append(message)
    logger.warning("skipped %s", message)


def _read_text(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DocumentError(
            f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); re-save it as UTF-8"
        ) from None
    except OSError as e:
        raise DocumentError(f"{path}: cannot be read ({e.strerror or e})") from None
    if "\x00" in text:  # valid UTF-8, but no text file holds NUL: a binary file, or a corrupt one
        raise DocumentError(f"{path}: holds NUL bytes (at offset {text.index(chr(0))}): a binary file, not text")
    return text


def _jsonl_documents(text: str, path: Path, name: str, on_error: OnError, skipped: list[str]) -> list[Document]:
    """One document per line: {"text": ..., "id"?: ..., "title"?: ..., "source"?: ...}; blank lines ignored."""
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            _problem(f"{path}:{n}: invalid JSON ({e.msg})", on_error, skipped)
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            _problem(f"{path}:{n}: expected an object with a string 'text' field", on_error, skipped)
            continue
        if not obj["text"].strip():
            _problem(f"{path}:{n}: empty document", on_error, skipped)
            continue
        source = obj.get("source") or f"{name}#{obj.get('id', n)}"
        docs.append(Document(obj["text"], str(source), obj.get("title")))
    return docs


def _squad_documents(text: str, path: Path, name: str) -> list[Document]:
    """SQuAD-format JSON: each paragraph's `context` is a document titled by its article."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DocumentError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DocumentError(f"{path}: not SQuAD-format JSON (expected an object with a 'data' list of articles)")
    return [
        Document(para["context"], f"{name}#{article['title']}/{i}", article["title"])
        for article in data["data"]
        for i, para in enumerate(article.get("paragraphs", []))
        if para.get("context", "").strip()
    ]


def _markdown_title(text: str) -> str | None:
    match = re.search(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE)
    return match.group(1) if match else None


def _file_documents(path: Path, name: str, on_error: OnError, skipped: list[str]) -> list[Document]:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DocumentError(f"{path}: unsupported file type {suffix or '(none)'!r}; supported: {list(SUFFIXES)}")
    text = _read_text(path)
    if not text.strip():
        raise DocumentError(f"{path}: empty document")
    if suffix == ".jsonl":
        return _jsonl_documents(text, path, name, on_error, skipped)
    if suffix == ".json":
        return _squad_documents(text, path, name)
    return [Document(text, name, _markdown_title(text) if suffix == ".md" else None)]


def read_documents(
    paths: str | os.PathLike | Iterable[str | os.PathLike], *, on_error: OnError = "warn"
) -> tuple[list[Document], list[str]]:
    """Documents of files and folders (folders: every supported file below, in sorted order), and the skip messages.

    A document's source is its file name (for a folder: its path relative to the folder), so passage ids do not
    depend on where the files sit. A problem (unreadable, empty, not UTF-8, unknown type, bad JSONL line) raises
    DocumentError when on_error="raise", else is skipped, logged and listed.
    """
    if on_error not in ("warn", "raise"):
        raise ValueError(f"on_error={on_error!r}: choose 'warn' or 'raise'")
    roots = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    docs: list[Document] = []
    skipped: list[str] = []
    for root in map(Path, roots):
        if root.is_dir():
            files = [(p, p.relative_to(root).as_posix()) for p in sorted(root.rglob("*")) if p.is_file()]
        elif root.exists():
            files = [(root, root.name)]
        else:
            raise FileNotFoundError(f"{root}: no such file or folder")
        for path, name in files:
            try:
                docs.extend(_file_documents(path, name, on_error, skipped))
            except DocumentError as e:
                _problem(str(e), on_error, skipped)
    return docs, skipped


# -----------------------------------------------------------------------------
# splitting documents into passages

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends at . ! or ? (maybe closed by a quote or bracket) followed by space and an upper-case start.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+(?=[A-Z0-9\"'(\[])")
_WORD = re.compile(r"\S+")

Span = tuple[int, int]  # character offsets [start, end) into the document text


def _words(text: str, span: Span) -> int:
    return len(text[span[0] : span[1]].split())


def _paragraphs(text: str) -> list[Span]:
    spans, start = [], 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _sentences(text: str, span: Span, max_words: int) -> list[Span]:
    """Sentence spans of a paragraph; a sentence longer than max_words is cut into word chunks."""
    start, end = span
    cuts = [m.end() for m in _SENTENCE_END.finditer(text, start, end)]
    out = []
    for s, e in zip([start, *cuts], [*cuts, end]):
        words = [m.span() for m in _WORD.finditer(text, s, e)]
        for i in range(0, len(words), max_words):
            chunk = words[i : i + max_words]
            out.append((chunk[0][0], chunk[-1][1]))
    return out


def _windows(sentences: list[Span], text: str, max_words: int, overlap: int) -> list[Span]:
    """Consecutive sentences packed up to max_words; the next window repeats the last `overlap` sentences."""
    windows, i = [], 0
    while i < len(sentences):
        j, words = i, _words(text, sentences[i])
        while j + 1 < len(sentences) and words + _words(text, sentences[j + 1]) <= max_words:
            j += 1
            words += _words(text, sentences[j])
        windows.append((sentences[i][0], sentences[j][1]))
        if j + 1 == len(sentences):
            break
        i = max(j + 1 - overlap, i + 1)
    return windows


def split_passages(text: str, *, max_words: int = 120, overlap_sentences: int = 1) -> list[str]:
    """Passage texts of a document: paragraphs, short neighbours merged up to max_words, long ones cut into
    sentence windows. Every passage is an exact slice of `text`, so it can be found in the original."""
    chunks: list[tuple[Span, bool]] = []  # (span, merge-able: a whole paragraph, not a window)
    for para in _paragraphs(text):
        if _words(text, para) > max_words:
            sents = _sentences(text, para, max_words)
            chunks.extend((w, False) for w in _windows(sents, text, max_words, overlap_sentences))
        elif chunks and chunks[-1][1] and _words(text, (chunks[-1][0][0], para[1])) <= max_words:
            chunks[-1] = ((chunks[-1][0][0], para[1]), True)
        else:
            chunks.append((para, True))
    return [text[s:e].strip() for (s, e), _ in chunks]


def passage_id(source: str, text: str) -> str:
    """Stable id: the same source and text give the same id on every machine and in every ingest order."""
    return hashlib.sha1(f"{source}\n{text}".encode()).hexdigest()[:16]


# -----------------------------------------------------------------------------
# the store


def _tokenize(texts: list[str]) -> list[list[str]]:
    """BM25 terms: lower-cased words of 2+ characters, English stopwords removed (bm25s' scikit-learn rule)."""
    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first; ties go to the earlier passage (deterministic)."""
    k = min(k, len(scores))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.sort(np.argpartition(-scores, k - 1)[:k])
    return idx[np.argsort(-scores[idx], kind="stable")]


def _minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.ones_like(x)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class DocumentStore:
    """Passages with a BM25 index and unit-length embeddings, searched by both and fused.

    bm25s builds its index in one pass and cannot append, so `add_documents` re-indexes all passages
    (about 1 s per 10k passages); embeddings are only computed for the new passages.
    """

    def __init__(self, config: RetrievalConfig | None = None, *, embedder: TextEncoder | None = None) -> None:
        self.config = config or RetrievalConfig()
        self._embedder = embedder  # None: the shared MiniLM embedder, loaded at first use
        self._passages: list[Passage] = []
        self._index: dict[str, int] = {}  # passage id -> row
        self._vectors: np.ndarray | None = None  # (n, dim) float32, unit rows
        self._bm25: bm25s.BM25 | None = None

    @property
    def embedder(self) -> TextEncoder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    @property
    def passages(self) -> Sequence[Passage]:
        return tuple(self._passages)

    def __len__(self) -> int:
        return len(self._passages)

    def get(self, passage_id: str) -> Passage:
        """The passage with this id (KeyError naming it when absent)."""
        if passage_id not in self._index:
            raise KeyError(f"no passage with id {passage_id!r} in the store ({len(self)} passages)")
        return self._passages[self._index[passage_id]]

    # ---- ingest

    def add(
        self, paths: str | os.PathLike | Iterable[str | os.PathLike], *, on_error: OnError = "warn"
    ) -> IngestReport:
        """Read files or folders (.txt, .md, .jsonl, SQuAD .json) and add their passages."""
        docs, skipped = read_documents(paths, on_error=on_error)
        report = self.add_documents(docs, on_error=on_error)
        return IngestReport(report.documents, report.passages_added, report.duplicates, skipped + report.skipped)

    def add_documents(self, documents: Iterable[Document], *, on_error: OnError = "warn") -> IngestReport:
        """Split documents into passages, embed the new ones and re-index. Passages already present are skipped."""
        skipped: list[str] = []
        new: list[Passage] = []
        seen = set(self._index)
        n_docs = duplicates = 0
        for doc in documents:
            n_docs += 1
            if not doc.text.strip():
                _problem(f"{doc.source}: empty document", on_error, skipped)
                continue
            for text in split_passages(
                doc.text, max_words=self.config.max_words, overlap_sentences=self.config.overlap_sentences
            ):
                pid = passage_id(doc.source, text)
                if pid in seen:
                    duplicates += 1
                    continue
                seen.add(pid)
                new.append(Passage(pid, text, doc.source, doc.title))
        if new:
            vectors = self.embedder.encode([p.text for p in new])
            self._append(new, vectors)
        return IngestReport(n_docs, len(new), duplicates, skipped)

    def _append(self, passages: list[Passage], vectors: np.ndarray) -> None:
        start = len(self._passages)
        self._passages.extend(passages)
        self._index.update((p.id, start + i) for i, p in enumerate(passages))
        self._vectors = vectors if self._vectors is None else np.vstack([self._vectors, vectors])
        self._bm25 = bm25s.BM25()
        self._bm25.index(_tokenize([p.text for p in self._passages]), show_progress=False)

    # ---- search

    def _sparse_scores(self, query: str) -> np.ndarray:
        vocab = self._bm25.vocab_dict
        ids = [vocab[t] for t in _tokenize([query])[0] if t in vocab]
        return self._bm25.get_scores_from_ids(ids).astype(np.float32) if ids else np.zeros(len(self), np.float32)

    def search(self, query: str, k: int = 5, *, mode: SearchMode = "hybrid") -> list[Hit]:
        """The k best passages for a question, best first.

        Fusion is a weighted sum of both scores, each min-max-normalised over the candidates of this query
        (BM25 is unbounded and grows with the query's length, cosines sit in a narrow band, so raw values cannot
        be added). It keeps the margins that reciprocal rank fusion throws away: when BM25 puts one passage far
        above the rest, RRF credits it like a close call. On the SQuAD benchmark (benchmarks/retrieval.py) it
        gave recall@1 0.82 against 0.76 for RRF (0.77 BM25 alone) and recall@5 0.95 against 0.93.
        """
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"empty question {query!r}: give a non-blank question to search for")
        if mode not in ("hybrid", "sparse", "dense"):
            raise ValueError(f"mode={mode!r}: choose 'hybrid', 'sparse' or 'dense'")
        if k < 1:
            raise ValueError(f"k={k!r}: must be at least 1")
        if not self._passages:
            raise ValueError("the store holds no passages: add documents before searching")
        sparse = self._sparse_scores(query)
        dense = self._vectors @ self.embedder.encode([query])[0]  # (n,) cosines: rows are unit vectors
        if mode == "sparse":
            fused = sparse
            order = _top(sparse, k)
            order = order[sparse[order] > 0]  # a passage with no query term is not a BM25 match
        elif mode == "dense":
            fused, order = dense, _top(dense, k)
        else:
            fused, order = self._fuse(sparse, dense, k)
        return [
            Hit(self._passages[i], float(fused[i]), float(sparse[i]), float(dense[i])) for i in order.tolist()
        ]

    def _fuse(self, sparse: np.ndarray, dense: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Fused scores (over all rows, zero outside the candidates) and the top-k rows."""
        cfg = self.config
        matched = np.flatnonzero(sparse > 0)
        sparse_top = matched[_top(sparse[matched], cfg.candidates)]
        dense_top = _top(dense, cfg.candidates)
        cand = np.union1d(sparse_top, dense_top)
        fused = np.zeros(len(dense), dtype=np.float64)
        if cfg.fusion == "rrf":
            ranks = np.arange(1, cfg.candidates + 1)
            fused[dense_top] += cfg.dense_weight / (cfg.rrf_k + ranks[: len(dense_top)])
            fused[sparse_top] += (1 - cfg.dense_weight) / (cfg.rrf_k + ranks[: len(sparse_top)])
        else:
            fused[cand] = cfg.dense_weight * _minmax(dense[cand])
            if len(sparse_top):
                fused[cand] += (1 - cfg.dense_weight) * _minmax(sparse[cand])
        return fused, cand[_top(fused[cand], k)]

    # ---- persistence

    def save(self, path: str | os.PathLike) -> Path:
        """Write the store to a folder: passages.jsonl, embeddings.npy, bm25/, and manifest.json last.

        The manifest (format version, counts, config, a checksum of every file) is written last, so a save that
        stops half-way leaves a folder that `load` refuses instead of a store with missing passages.
        """
        folder = Path(path)
        if folder.exists() and any(folder.iterdir()) and not (folder / _MANIFEST).exists():
            raise StoreError(f"{folder}: folder is not empty and holds no {_MANIFEST}; save to a new or empty folder")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / _MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(folder / _BM25, ignore_errors=True)
        with open(folder / _PASSAGES, "w", encoding="utf-8") as f:
            for p in self._passages:
                f.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
        vectors = self._vectors if self._vectors is not None else np.zeros((0, self.embedder.dim), np.float32)
        np.save(folder / _EMBEDDINGS, vectors)
        if self._bm25 is not None:
            self._bm25.save(str(folder / _BM25), show_progress=False)
        files = [_PASSAGES, _EMBEDDINGS] + sorted(
            p.relative_to(folder).as_posix() for p in (folder / _BM25).glob("*") if p.is_file()
        )
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "passages": len(self._passages),
            "embedder": self.embedder.name,
            "dim": int(vectors.shape[1]),
            "config": self.config.to_dict(),
            "checksums": {name: _sha256(folder / name) for name in files},
        }
        tmp = folder / (_MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        os.replace(tmp, folder / _MANIFEST)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike, *, embedder: TextEncoder | None = None) -> DocumentStore:
        """A store saved by `save`; StoreError naming the file when anything is missing, corrupt or mismatched."""
        folder = Path(path)
        manifest = _read_manifest(folder)
        for name, digest in manifest["checksums"].items():
            file = folder / name
            if not file.is_file():
                raise StoreError(f"{file}: missing; the store folder is incomplete, rebuild it")
            if _sha256(file) != digest:
                raise StoreError(f"{file}: checksum differs from {_MANIFEST}; the file is corrupt, rebuild the store")
        n = manifest["passages"]
        store = cls(RetrievalConfig.from_dict(manifest["config"]), embedder=embedder)
        used = (embedder.name, embedder.dim) if embedder is not None else (MODEL_NAME, manifest["dim"])
        if used != (manifest["embedder"], manifest["dim"]):
            raise StoreError(
                f"{folder / _MANIFEST}: store was built with embedder {manifest['embedder']!r} (dim "
                f"{manifest['dim']}), not {used[0]!r} (dim {used[1]}); load it with the same embedder"
            )
        passages = _read_passages(folder / _PASSAGES, n)
        try:
            vectors = np.load(folder / _EMBEDDINGS, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise StoreError(f"{folder / _EMBEDDINGS}: unreadable ({e}); rebuild the store") from None
        if vectors.shape != (n, manifest["dim"]) or vectors.dtype != np.float32:
            raise StoreError(
                f"{folder / _EMBEDDINGS}: shape {vectors.shape} {vectors.dtype}, expected ({n}, {manifest['dim']}) "
                "float32; rebuild the store"
            )
        if n == 0:
            return store
        try:
            bm25 = bm25s.BM25.load(str(folder / _BM25), show_progress=False)
        except (OSError, ValueError, KeyError) as e:
            raise StoreError(f"{folder / _BM25}: unreadable BM25 index ({e}); rebuild the store") from None
        if bm25.scores["num_docs"] != n:
            raise StoreError(f"{folder / _BM25}: indexes {bm25.scores['num_docs']} passages, manifest says {n}")
        store._passages = passages
        store._index = {p.id: i for i, p in enumerate(passages)}
        store._vectors, store._bm25 = vectors, bm25
        return store


def _read_manifest(folder: Path) -> dict:
    file = folder / _MANIFEST
    if not folder.is_dir():
        raise StoreError(f"{folder}: no such store folder")
    if not file.is_file():
        raise StoreError(f"{file}: missing; not a saved store, or its save did not finish")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{file}: not valid JSON ({e}); the store is corrupt") from None
    keys = {"format", "version", "passages", "embedder", "dim", "config", "checksums"}
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME or keys - set(manifest):
        raise StoreError(f"{file}: not a {FORMAT_NAME} manifest (needs keys {sorted(keys)})")
    if manifest["version"] != FORMAT_VERSION:
        raise StoreError(f"{file}: format version {manifest['version']!r}; this council reads {FORMAT_VERSION}")
    return manifest


def _read_passages(file: Path, n: int) -> list[Passage]:
    passages = []
    with open(file, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                passages.append(Passage(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as e:
                raise StoreError(f"{file}:{line_no}: not a passage record ({e}); rebuild the store") from None
    if len(passages) != n:
        raise StoreError(f"{file}: {len(passages)} passages, manifest says {n}; rebuild the store")
    return passages


# -----------------------------------------------------------------------------
# packing into the prompt's budget


def pack(
    hits: Sequence[Hit], budget_tokens: int, count_tokens: Callable[[str], int], *, overhead_tokens: int = 0
) -> Context:
    """The best hits that fit in budget_tokens, in rank order; a hit too big for what is left is dropped and
    smaller ones after it may still fit. overhead_tokens: per-passage cost of its formatting (e.g. "[3] ")."""
    if budget_tokens < 1:
        raise ValueError(f"budget_tokens={budget_tokens!r}: must be at least 1 token")
    if overhead_tokens < 0:
        raise ValueError(f"overhead_tokens={overhead_tokens!r}: must be 0 or more")
    kept: list[Hit] = []
    dropped: list[str] = []
    used = 0
    for hit in hits:
        cost = count_tokens(hit.passage.text) + overhead_tokens
        if used + cost <= budget_tokens:
            kept.append(hit)
            used += cost
        else:
            dropped.append(hit.passage.id)
    return Context([h.passage for h in kept], [h.score for h in kept], used, budget_tokens, dropped)
