"""The benchmark student: frozen MiniLM sentence embeddings plus logistic regression.

It measures how useful a synthetic set is: train it on the seeds alone, then on seeds plus
synthetic samples, and compare the two on the task's test split (BENCHMARKS.md, section 1).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from streamsynth.errors import DataError
from streamsynth.eval.embedder import Embedder

SEP = " [SEP] "


def example_text(inputs: Mapping[str, str], fields: Sequence[str]) -> str:
    """The student's text for one example: the input fields in order, joined by ' [SEP] '."""
    missing = [f for f in fields if f not in inputs]
    if missing:
        raise DataError(f"example has no input field {missing[0]!r} (it has {sorted(inputs)}); check the task's fields")
    if not fields:
        raise DataError("example_text needs at least one input field name")
    return SEP.join(str(inputs[f]) for f in fields)


class EmbeddingLogRegStudent:
    """Logistic regression on frozen sentence embeddings.

    ``train`` fits it (``classes_``, ``classifier_`` and ``n_train_`` hold the fitted state);
    ``predict`` returns label strings; ``evaluate`` returns accuracy, macro-F1 and n.
    """

    def __init__(self, embedder: Embedder | None = None, C: float = 1.0, max_iter: int = 2000, seed: int = 0) -> None:
        if C <= 0:
            raise ValueError(f"C must be positive, got {C}")
        self.embedder = embedder if embedder is not None else Embedder()
        self.C = C
        self.max_iter = max_iter
        self.seed = seed

    def train(self, texts: Sequence[str], labels: Sequence[str]) -> "EmbeddingLogRegStudent":
        from sklearn.linear_model import LogisticRegression

        texts, labels = list(texts), [str(y) for y in labels]
        if len(texts) != len(labels):
            raise DataError(f"got {len(texts)} texts but {len(labels)} labels; give one label per text")
        distinct = sorted(set(labels))
        if len(distinct) < 2:
            got = f"only the label {distinct[0]!r}" if distinct else "no examples"
            raise DataError(
                f"the student needs examples of at least two labels to train; got {got} "
                f"({len(texts)} examples); add examples of the other labels"
            )
        X = self.embedder.encode(texts)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
        clf.fit(X, np.asarray(labels, dtype=object))
        self.classifier_ = clf
        self.classes_ = [str(c) for c in clf.classes_]
        self.n_train_ = len(texts)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "classifier_"):
            raise DataError("the student is not trained yet; call train(texts, labels) first")

    def predict(self, texts: Sequence[str]) -> list[str]:
        self._check_fitted()
        texts = list(texts)
        if not texts:
            return []
        return [str(y) for y in self.classifier_.predict(self.embedder.encode(texts))]

    def evaluate(self, texts: Sequence[str], labels: Sequence[str]) -> dict[str, float | int]:
        """Score on labelled texts: ``{"accuracy", "macro_f1", "n"}``."""
        from sklearn.metrics import accuracy_score, f1_score

        texts, labels = list(texts), [str(y) for y in labels]
        if len(texts) != len(labels):
            raise DataError(f"got {len(texts)} texts but {len(labels)} labels; give one label per text")
        if not texts:
            raise DataError("nothing to evaluate on; give at least one labelled text")
        pred = self.predict(texts)
        return {
            "accuracy": float(accuracy_score(labels, pred)),
            "macro_f1": float(f1_score(labels, pred, average="macro", zero_division=0)),
            "n": len(texts),
        }
