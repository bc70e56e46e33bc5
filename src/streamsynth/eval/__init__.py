"""Evaluation: the benchmark student (frozen MiniLM embeddings + logistic regression)."""

from streamsynth.eval.embedder import Embedder, embedded_minilm_path
from streamsynth.eval.student import EmbeddingLogRegStudent, example_text

__all__ = sorted(["Embedder", "EmbeddingLogRegStudent", "embedded_minilm_path", "example_text"])
