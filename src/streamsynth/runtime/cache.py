"""A persistent response cache in SQLite.

The key is the fingerprint of everything a response depends on (model identity, messages,
sampling parameters, seed, sample index): ``CompletionRequest.cache_key``. Only successful
responses are stored. Writes are committed in batches; WAL mode lets a reader and a writer work
at once. The cache never stores API keys: they are not part of any request.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Mapping

from streamsynth.errors import CacheError
from streamsynth.records import Completion

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now'))
)
"""


class ResponseCache:
    """``get_many`` / ``put_many`` over a SQLite file (``":memory:"`` for a throwaway cache)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(
                f"cannot open the response cache at {self.path}: {exc}; "
                "pass another --cache-dir or delete the file if it is corrupt"
            ) from exc

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        keys = list(keys)
        found: dict[str, Completion] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", part)
                for key, response in rows:
                    try:
                        found[key] = Completion.from_dict(json.loads(response), cached=True)
                    except (ValueError, KeyError, TypeError):
                        continue  # an unreadable row is a miss; it is overwritten on the next put
        return found

    def get(self, key: str) -> Completion | None:
        return self.get_many([key]).get(key)

    def put_many(self, items: Mapping[str, Completion]) -> None:
        rows = [(k, c.model, json.dumps(c.to_dict(), ensure_ascii=False)) for k, c in items.items() if c.ok]
        if not rows:
            return
        with self._lock:
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO responses (key, model, response) VALUES (?, ?, ?)", rows
                )
                self._db.commit()
            except sqlite3.Error as exc:
                raise CacheError(f"cannot write the response cache at {self.path}: {exc}; check free disk space") from exc

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
