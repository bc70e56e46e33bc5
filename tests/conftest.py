import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DATA = REPO / "examples" / "data"


@pytest.fixture
def tiny_task_spec(tmp_path: Path) -> Path:
    """A small sentiment task: spec + train/dev JSONL in a temp folder."""
    pos = ["a warm and funny film", "the acting is superb", "i loved every minute", "a joyful ride",
           "beautifully shot and moving", "clever script and great cast"]
    neg = ["a dull and tedious mess", "the plot makes no sense", "i was bored the whole time",
           "a clumsy waste of talent", "painfully slow and flat", "the jokes fall flat"]
    rows = [{"text": t, "label": "positive"} for t in pos] + [{"text": t, "label": "negative"} for t in neg]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        """
name: tiny
description: Classify the sentiment of a short movie review.
kind: classification
data: {train: train.jsonl, dev: dev.jsonl}
fields: {input: text, output: label}
labels:
  - {name: negative, description: the writer dislikes the film}
  - {name: positive, description: the writer likes the film}
seeds: {per_label: 3, seed: 0}
attributes:
  aspect: [acting, plot, music]
  length: [short, long]
generation: {input_noun: review, min_chars: 5, label_check: false}
"""
    )
    return spec


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory) -> Path:
    """One cache folder per test session, so the GGUF conversion (~20 s) happens once."""
    return tmp_path_factory.mktemp("model-cache")


class HashEmbedder:
    """A small deterministic stand-in for the MiniLM embedder: hashed bag of words, unit rows.

    Texts sharing words are similar, texts sharing none are (nearly) orthogonal. ``calls`` and
    ``texts_encoded`` count the work done, so tests can check that texts are not embedded again.
    """

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim
        self.calls = 0
        self.texts_encoded = 0

    def encode(self, texts):
        import re
        import zlib

        import numpy as np

        texts = list(texts)
        self.calls += 1
        self.texts_encoded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9']+", text.lower()):
                out[i, zlib.crc32(word.encode()) % self.dim] += 1.0
            norm = np.linalg.norm(out[i])
            if norm == 0:
                out[i, 0] = norm = 1.0
            out[i] /= norm
        return out


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    """A fresh ``HashEmbedder`` (fast, deterministic, no model files)."""
    return HashEmbedder()
