"""The experience store: what SynLearner keeps from one task of a stream to the next.

One SQLite file holds, per task, its descriptor (a unit vector, to find similar tasks), the
reward statistics of each synthesis pattern (priors for the bandit on the next task), lessons
(short texts retrieved Generative-Agents style: recency + importance + relevance), and
high-reward samples (candidate demonstrations); plus small JSON state blobs (stream progress)
and named snapshots, so a stream can resume or roll back a task.

Why SQLite: one file, atomic transactions (a crash never leaves half a task written), WAL mode
so a reader and a writer can work at once, and the backup API for consistent snapshots. The
store keeps no secrets; every read is ordered, so the same calls give the same answers.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from streamsynth.errors import ConfigError, DataError

FORMAT = "streamsynth-experience"
SCHEMA_VERSION = 1
_SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS store_info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO store_info VALUES ('format', '{FORMAT}'), ('schema_version', '{SCHEMA_VERSION}');
CREATE TABLE IF NOT EXISTS tasks (
    key TEXT PRIMARY KEY, position INTEGER NOT NULL UNIQUE, name TEXT NOT NULL,
    labels TEXT NOT NULL, descriptor BLOB NOT NULL, meta TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pattern_rewards (
    task_key TEXT NOT NULL REFERENCES tasks(key), pattern TEXT NOT NULL,
    n INTEGER NOT NULL, total REAL NOT NULL, total_sq REAL NOT NULL,
    PRIMARY KEY (task_key, pattern)
);
CREATE TABLE IF NOT EXISTS lessons (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_key TEXT NOT NULL REFERENCES tasks(key),
    text TEXT NOT NULL, importance REAL NOT NULL, embedding BLOB NOT NULL,
    created_at REAL NOT NULL, kind TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS exemplars (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_key TEXT NOT NULL REFERENCES tasks(key),
    label TEXT NOT NULL, inputs TEXT NOT NULL, reward REAL NOT NULL, pattern TEXT NOT NULL,
    UNIQUE (task_key, label, inputs)
);
CREATE INDEX IF NOT EXISTS exemplars_by_reward ON exemplars (task_key, reward DESC, id);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class TaskRecord:
    """A task of the stream. ``position`` is the order tasks were first added in (0, 1, ...)."""

    key: str
    name: str
    labels: tuple[str, ...]
    descriptor: np.ndarray = field(compare=False, repr=False)
    meta: dict[str, Any]
    position: int


@dataclass(frozen=True)
class PatternStats:
    """Rewards one pattern earned on one task: count, sum and sum of squares."""

    pattern: str
    n: int
    total: float
    total_sq: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def var(self) -> float:
        """Population variance of the rewards (0 for fewer than two)."""
        return max(self.total_sq / self.n - self.mean**2, 0.0) if self.n else 0.0


@dataclass(frozen=True)
class Lesson:
    """A retrieved lesson. ``score`` is the weighted sum of the three ``*_score`` parts, each
    normalized over the candidates; ``recency`` and ``relevance`` are the raw values (decay ** age
    and cosine), so a caller can tell a stale or unrelated best lesson from a good one."""

    id: int
    task_key: str
    text: str
    importance: float
    created_at: float
    kind: str
    score: float
    recency_score: float
    importance_score: float
    relevance_score: float
    recency: float
    relevance: float


@dataclass(frozen=True)
class Exemplar:
    """A high-reward sample kept as a candidate demonstration: its input fields and label."""

    label: str
    inputs: dict[str, Any]
    reward: float
    pattern: str = ""

    @property
    def text(self) -> str:
        """The input text: the one field's value, or the fields as JSON for pair tasks."""
        if len(self.inputs) == 1:
            return str(next(iter(self.inputs.values())))
        return json.dumps(self.inputs, sort_keys=True, ensure_ascii=False)


def check_rewards(rewards: Sequence[float] | np.ndarray, what: str = "rewards") -> np.ndarray:
    """``rewards`` as a float array, or a ``DataError`` if any is not a finite number in [0, 1]."""
    try:
        arr = np.asarray(rewards, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be numbers in [0, 1]: {exc}") from exc
    bad = ~np.isfinite(arr) | (arr < 0.0) | (arr > 1.0)
    if bad.any():
        raise DataError(
            f"{what} must be finite numbers in [0, 1]; got {arr[bad][:5].tolist()}: clip or fix the reward function"
        )
    return arr


def _unit(vec: np.ndarray | Sequence[float], what: str) -> np.ndarray:
    """A 1-d float32 unit vector, or a ``DataError`` for an empty, zero or non-finite one."""
    arr = np.asarray(vec, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(arr)) if arr.size else 0.0
    if not arr.size or not math.isfinite(norm) or norm == 0.0:
        raise DataError(f"{what} must be a non-empty, finite, non-zero vector (an embedding)")
    return arr / np.float32(norm)


def _blob(vec: np.ndarray) -> bytes:
    return vec.astype("<f4").tobytes()


def _vector(blob: bytes) -> np.ndarray:
    arr = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    arr.setflags(write=False)
    return arr


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be JSON data (str, number, bool, None, list, dict): {exc}") from exc


def _minmax(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the candidates; all equal → 0.5 each (they cannot be told apart)."""
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 1e-12:
        return np.full_like(x, 0.5)
    return (x - lo) / (hi - lo)


def _check_count(k: int | None, what: str = "k") -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise ConfigError(f"{what} must be a whole number >= 0; got {k!r}")


def _check_store(db: sqlite3.Connection, where: str) -> bool:
    """True if ``db`` is a streamsynth store this code can read, False if empty; else DataError."""
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return False
        info = dict(db.execute("SELECT name, value FROM store_info")) if "store_info" in tables else {}
    except sqlite3.DatabaseError as exc:
        raise DataError(
            f"{where} is not a streamsynth experience store ({exc}); pass a new path or move the file away"
        ) from exc
    if info.get("format") != FORMAT:
        raise DataError(
            f"{where} is a SQLite file but not a streamsynth experience store; pass a new path or move the file away"
        )
    version = int(info.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise DataError(
            f"{where} was written by a newer streamsynth (store schema v{version}; this one reads up to "
            f"v{SCHEMA_VERSION}); upgrade streamsynth"
        )
    return True


class ExperienceStore:
    """Tasks, pattern rewards, lessons, exemplars, state and snapshots in one SQLite file.

    Use as a context manager or call ``close()``. Writes that reference a task (rewards,
    lessons, exemplars) need the task added first with ``add_task``; reads of an unknown task
    return nothing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
        except (sqlite3.Error, OSError) as exc:
            raise DataError(f"cannot open the experience store at {self.path}: {exc}; pass a writable path") from exc
        try:
            _check_store(self._db, str(self.path))
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        except BaseException:
            self._db.close()
            raise

    # -- plumbing -----------------------------------------------------------------------------

    def __enter__(self) -> ExperienceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ExperienceStore({str(self.path)!r})"

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise DataError(f"the experience store at {self.path} is closed; open it again with ExperienceStore(path)")
        return self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction: all of the block's writes land, or none do."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise DataError(f"cannot write the experience store at {self.path}: {exc}; check free disk space") from exc

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn().execute(sql, params).fetchall()

    @staticmethod
    def _require_task(db: sqlite3.Connection, task_key: str) -> None:
        if db.execute("SELECT 1 FROM tasks WHERE key = ?", (task_key,)).fetchone() is None:
            raise DataError(f"unknown task {task_key!r} in the experience store; call add_task({task_key!r}, ...) first")

    # -- tasks --------------------------------------------------------------------------------

    def add_task(
        self,
        key: str,
        *,
        name: str,
        descriptor: np.ndarray,
        labels: Sequence[str],
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Add a task or update it in place (it keeps its position). ``descriptor`` is normalized."""
        if not isinstance(key, str) or not key:
            raise DataError(f"a task key must be a non-empty string; got {key!r}")
        if isinstance(labels, str) or not all(isinstance(x, str) for x in labels):
            raise DataError(f"labels of task {key!r} must be a list of strings; got {labels!r}")
        vec = _unit(descriptor, f"the descriptor of task {key!r}")
        row = (key, name, _json(list(labels), "labels"), _blob(vec), _json(dict(meta or {}), f"meta of task {key!r}"))
        with self._write() as db:
            other = db.execute("SELECT key, length(descriptor) FROM tasks WHERE key != ? LIMIT 1", (key,)).fetchone()
            if other is not None and other[1] // 4 != vec.size:
                raise DataError(
                    f"the descriptor of task {key!r} has {vec.size} dimensions but task {other[0]!r} has {other[1] // 4}; "
                    "describe every task with the same embedder"
                )
            db.execute(
                "INSERT INTO tasks (key, position, name, labels, descriptor, meta) "
                "VALUES (?, (SELECT COALESCE(MAX(position), -1) + 1 FROM tasks), ?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET name = excluded.name, labels = excluded.labels, "
                "descriptor = excluded.descriptor, meta = excluded.meta",
                row,
            )

    def tasks(self) -> list[TaskRecord]:
        """Every task, in the order they were first added."""
        rows = self._rows("SELECT key, name, labels, descriptor, meta, position FROM tasks ORDER BY position")
        return [
            TaskRecord(key=k, name=n, labels=tuple(json.loads(lb)), descriptor=_vector(d), meta=json.loads(m), position=p)
            for k, n, lb, d, m, p in rows
        ]

    def similar_tasks(
        self, descriptor: np.ndarray, *, exclude: str | None = None, k: int = 5
    ) -> list[tuple[str, float]]:
        """The ``k`` stored tasks with the highest cosine similarity to ``descriptor``, best first
        (ties: earlier task first)."""
        _check_count(k)
        query = _unit(descriptor, "the query descriptor")
        found = []
        for task in self.tasks():
            if task.key == exclude:
                continue
            if task.descriptor.size != query.size:
                raise DataError(
                    f"the query descriptor has {query.size} dimensions but task {task.key!r} has "
                    f"{task.descriptor.size}; describe every task with the same embedder"
                )
            found.append((task.key, float(np.clip(task.descriptor @ query, -1.0, 1.0)), task.position))
        found.sort(key=lambda t: (-t[1], t[2]))
        return [(key, sim) for key, sim, _ in found[:k]]

    # -- pattern rewards ----------------------------------------------------------------------

    def record_rewards(self, task_key: str, pattern: str, rewards: Sequence[float]) -> None:
        """Add rewards (each a finite number in [0, 1]) to a pattern's statistics on a task."""
        arr = check_rewards(rewards, f"rewards of pattern {pattern!r} on task {task_key!r}")
        if not arr.size:
            return
        with self._write() as db:
            self._require_task(db, task_key)
            db.execute(
                "INSERT INTO pattern_rewards (task_key, pattern, n, total, total_sq) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(task_key, pattern) DO UPDATE SET n = n + excluded.n, "
                "total = total + excluded.total, total_sq = total_sq + excluded.total_sq",
                (task_key, pattern, int(arr.size), float(arr.sum()), float((arr * arr).sum())),
            )

    def pattern_stats(self, task_key: str) -> dict[str, PatternStats]:
        """The statistics of every pattern tried on ``task_key``, by pattern id (sorted)."""
        return self.all_pattern_stats(task_key).get(task_key, {})

    def all_pattern_stats(self, task_key: str | None = None) -> dict[str, dict[str, PatternStats]]:
        """Pattern statistics by task (in task order), then by pattern; one task if ``task_key``."""
        sql = (
            "SELECT r.task_key, r.pattern, r.n, r.total, r.total_sq FROM pattern_rewards r "
            "JOIN tasks t ON t.key = r.task_key {} ORDER BY t.position, r.pattern"
        )
        if task_key is None:
            rows = self._rows(sql.format(""))
        else:
            rows = self._rows(sql.format("WHERE r.task_key = ?"), (task_key,))
        out: dict[str, dict[str, PatternStats]] = {}
        for task, pattern, n, total, total_sq in rows:
            out.setdefault(task, {})[pattern] = PatternStats(pattern, int(n), float(total), float(total_sq))
        return out

    # -- lessons ------------------------------------------------------------------------------

    def add_lesson(
        self,
        task_key: str,
        text: str,
        *,
        importance: float,
        embedding: np.ndarray,
        created_at: float,
        kind: str = "lesson",
    ) -> int:
        """Store a lesson learned on ``task_key``; returns its id. ``importance`` is 1 (mundane) to
        10 (crucial); ``created_at`` is on the caller's clock (e.g. the task's position)."""
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"a lesson of task {task_key!r} must be non-empty text")
        if not (isinstance(importance, (int, float)) and 1.0 <= float(importance) <= 10.0):
            raise DataError(f"lesson importance must be a number from 1 to 10; got {importance!r}")
        if not (isinstance(created_at, (int, float)) and math.isfinite(created_at)):
            raise DataError(f"lesson created_at must be a finite number (the caller's clock); got {created_at!r}")
        vec = _unit(embedding, "a lesson embedding")
        with self._write() as db:
            self._require_task(db, task_key)
            cur = db.execute(
                "INSERT INTO lessons (task_key, text, importance, embedding, created_at, kind) VALUES (?, ?, ?, ?, ?, ?)",
                (task_key, text, float(importance), _blob(vec), float(created_at), kind),
            )
            return int(cur.lastrowid)  # type: ignore[arg-type]

    def next_time(self) -> float:
        """One past the latest lesson's ``created_at`` (0 for a store without lessons): where a new
        run's clock starts, so its lessons are newer than every lesson already stored."""
        rows = self._rows("SELECT MAX(created_at) FROM lessons")
        latest = rows[0][0] if rows else None
        return 0.0 if latest is None else float(math.floor(latest)) + 1.0

    def retrieve_lessons(
        self,
        query: np.ndarray,
        *,
        now: float,
        k: int = 5,
        weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
        decay: float = 0.995,
        exclude_task: str | None = None,
    ) -> list[Lesson]:
        """The ``k`` best lessons for ``query``, scored as in Generative Agents (Park et al. 2023).

        Three parts, each min-max normalized to [0, 1] over the candidates (0.5 each when all are
        equal): recency ``decay ** max(now - created_at, 0)``, importance, and relevance (cosine
        of the embeddings). ``score = w_recency*recency + w_importance*importance +
        w_relevance*relevance`` with ``weights`` in that order. Ties go to the older lesson (lower id).
        Every candidate's recency carries the same factor ``decay ** now``, so after normalization
        the ranking depends on the gaps between lessons (and ``decay``), not on ``now`` itself;
        lessons dated after ``now`` count as brand new.
        """
        _check_count(k)
        if len(weights) != 3 or not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights):
            raise ConfigError(f"weights must be three finite numbers >= 0 (recency, importance, relevance); got {weights!r}")
        if not (isinstance(decay, (int, float)) and 0.0 < decay <= 1.0):
            raise ConfigError(f"decay must be in (0, 1] (e.g. 0.995 per unit of time); got {decay!r}")
        q = _unit(query, "the lesson query")
        sql = "SELECT id, task_key, text, importance, created_at, kind, embedding FROM lessons"
        if exclude_task is None:
            rows = self._rows(sql + " ORDER BY id")
        else:
            rows = self._rows(sql + " WHERE task_key != ? ORDER BY id", (exclude_task,))
        if not rows or k == 0:
            return []
        embeddings = [_vector(r[6]) for r in rows]
        if any(e.size != q.size for e in embeddings):
            raise DataError(
                f"the lesson query has {q.size} dimensions but some stored lessons do not; "
                "embed lessons and queries with the same embedder"
            )
        ids = np.array([r[0] for r in rows])
        age = np.maximum(float(now) - np.array([r[4] for r in rows], dtype=np.float64), 0.0)
        recency = float(decay) ** age
        relevance = np.clip(np.stack(embeddings).astype(np.float64) @ q.astype(np.float64), -1.0, 1.0)
        importance = np.array([r[3] for r in rows], dtype=np.float64)
        parts = np.stack([_minmax(recency), _minmax(importance), _minmax(relevance)])
        scores = np.asarray(weights, dtype=np.float64) @ parts
        order = np.lexsort((ids, -scores))[:k]
        return [
            Lesson(
                id=int(rows[i][0]), task_key=rows[i][1], text=rows[i][2], importance=float(rows[i][3]),
                created_at=float(rows[i][4]), kind=rows[i][5], score=float(scores[i]),
                recency_score=float(parts[0, i]), importance_score=float(parts[1, i]), relevance_score=float(parts[2, i]),
                recency=float(recency[i]), relevance=float(relevance[i]),
            )
            for i in order
        ]

    # -- exemplars ----------------------------------------------------------------------------

    def add_exemplars(self, task_key: str, exemplars: Sequence[Exemplar]) -> None:
        """Keep samples as candidate demonstrations. The same (label, inputs) twice is kept once,
        with the higher reward and that sample's pattern."""
        rows = []
        for ex in exemplars:
            if not isinstance(ex.inputs, Mapping) or not isinstance(ex.label, str):
                raise DataError(f"an exemplar needs a string label and a dict of input fields; got {ex!r}")
            reward = float(check_rewards([ex.reward], f"the reward of an exemplar of task {task_key!r}")[0])
            rows.append((task_key, ex.label, _json(dict(ex.inputs), "exemplar inputs"), reward, ex.pattern))
        with self._write() as db:
            self._require_task(db, task_key)
            db.executemany(
                "INSERT INTO exemplars (task_key, label, inputs, reward, pattern) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(task_key, label, inputs) DO UPDATE SET "
                "pattern = CASE WHEN excluded.reward > reward THEN excluded.pattern ELSE pattern END, "
                "reward = MAX(reward, excluded.reward)",
                rows,
            )

    def exemplars(
        self, task_key: str, *, label: str | None = None, k: int | None = None, min_reward: float = 0.0
    ) -> list[Exemplar]:
        """A task's exemplars with reward >= ``min_reward``, best reward first (ties: first added)."""
        _check_count(k)
        sql = "SELECT label, inputs, reward, pattern FROM exemplars WHERE task_key = ? AND reward >= ?"
        params: list[Any] = [task_key, float(min_reward)]
        if label is not None:
            sql += " AND label = ?"
            params.append(label)
        sql += " ORDER BY reward DESC, id"
        if k is not None:
            sql += " LIMIT ?"
            params.append(k)
        return [Exemplar(lb, json.loads(inp), float(r), p) for lb, inp, r, p in self._rows(sql, params)]

    # -- state --------------------------------------------------------------------------------

    def put_state(self, key: str, value: Mapping[str, Any]) -> None:
        """Store a JSON object under ``key`` (replacing what was there): stream progress and the like."""
        if not isinstance(value, Mapping):
            raise DataError(f"state {key!r} must be a mapping (a JSON object); got {type(value).__name__}")
        blob = _json(dict(value), f"state {key!r}")
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, blob))

    def get_state(self, key: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT value FROM state WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    # -- snapshots ----------------------------------------------------------------------------

    @property
    def snapshot_dir(self) -> Path:
        return self.path.with_name(self.path.name + ".snapshots")

    def _snapshot_path(self, name: str) -> Path:
        if not isinstance(name, str) or not _SNAPSHOT_NAME.match(name):
            raise ConfigError(
                f"snapshot name {name!r} is not allowed: use letters, digits, '.', '_' and '-' "
                "(starting with a letter or digit, at most 128 characters)"
            )
        return self.snapshot_dir / f"{name}.sqlite"

    def snapshot(self, name: str) -> Path:
        """Copy the store as it is now into ``<store>.snapshots/<name>.sqlite`` (replacing a
        snapshot of that name) with SQLite's backup API: a consistent copy, even while writing."""
        target = self._snapshot_path(name)
        tmp = target.with_name(target.name + ".tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            dst = sqlite3.connect(tmp)
            try:
                with self._lock:
                    self._conn().backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                dst.close()
            os.replace(tmp, target)
        except (sqlite3.Error, OSError) as exc:
            raise DataError(f"cannot write snapshot {name!r} to {target}: {exc}; check free disk space") from exc
        return target

    def snapshots(self) -> list[str]:
        """Names of the snapshots of this store, sorted."""
        if not self.snapshot_dir.is_dir():
            return []
        return sorted(p.name[: -len(".sqlite")] for p in self.snapshot_dir.glob("*.sqlite"))

    def restore(self, name: str) -> None:
        """Roll the whole store back to snapshot ``name``: what was written since is gone."""
        path = self._snapshot_path(name)
        if not path.is_file():
            raise DataError(f"no snapshot {name!r} of the experience store at {self.path}; known: {self.snapshots()}")
        try:
            src = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise DataError(f"cannot open snapshot {name!r} at {path}: {exc}") from exc
        try:
            _check_store(src, f"snapshot {name!r} ({path})")
            with self._lock:
                db = self._conn()
                src.backup(db)
                db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise DataError(f"cannot restore snapshot {name!r} into {self.path}: {exc}") from exc
        finally:
            src.close()
