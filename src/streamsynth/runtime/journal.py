"""The run journal: finished items, appended as they finish, so a killed run resumes.

``journal.jsonl`` in the run folder holds one JSON object per line:

- ``{"run": FINGERPRINT, "version": 1}`` first: a journal is only resumed by the same run;
- ``{"fitted": {...}}``: what the program learned before the first item (e.g. proposed
  attributes), so a resumed run continues with the same program;
- ``{"item": INDEX, "samples": [...]}`` for each finished item, in the order they finished.

Lines are written by a worker thread (off the event loop) and flushed after every batch, so a
SIGKILL loses at most the items that had not finished. A torn last line (killed mid-write) is
ignored on reading and cut off before new lines are appended.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from streamsynth.errors import OutputError
from streamsynth.fingerprint import to_json
from streamsynth.records import Cost, Sample

JOURNAL = "journal.jsonl"
_STOP = object()


def read_journal(path: Path) -> tuple[str | None, dict[str, Any] | None, dict[int, list[Sample]], Cost, int, int]:
    """(run fingerprint, fitted state, finished items, their cost and calls, byte length of the good part)."""
    run, fitted, items, good = None, None, {}, 0
    cost, calls = Cost(), 0
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break  # torn last line
            try:
                obj = json.loads(raw)
                if "run" in obj:
                    run = obj["run"]
                elif "fitted" in obj:
                    fitted = obj["fitted"]
                    fitted["_setup_calls"] = int(obj.get("calls", 0))
                    cost, calls = cost + Cost(**obj.get("cost", {})), calls + int(obj.get("calls", 0))
                elif "item" in obj:
                    items[int(obj["item"])] = [Sample.from_dict(s) for s in obj["samples"]]
                    cost, calls = cost + Cost(**obj.get("cost", {})), calls + int(obj.get("calls", 0))
            except (ValueError, KeyError, TypeError):
                break  # unreadable: keep what came before it
            good += len(raw)
    return run, fitted, items, cost, calls, good


class Journal:
    """Append-only record of a run's finished items; ``items`` and ``fitted`` hold what it had."""

    def __init__(self, folder: Path, run_fingerprint: str) -> None:
        self.path = Path(folder) / JOURNAL
        self.run_fingerprint = run_fingerprint
        self.items: dict[int, list[Sample]] = {}
        self.fitted: dict[str, Any] | None = None
        #: what the journaled work cost (counts against the budget of a resumed run)
        self.cost, self.calls = Cost(), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = True
        if self.path.is_file():
            run, fitted, items, cost, calls, good = read_journal(self.path)
            if run is not None and run != run_fingerprint:
                raise OutputError(
                    f"{self.path} belongs to another run (different task, config or seed); "
                    "choose another --out, or pass --overwrite to start over"
                )
            if run is not None:
                fresh = False
                self.items, self.fitted, self.cost, self.calls = items, fitted, cost, calls
                with self.path.open("r+b") as fh:  # drop a torn tail before appending
                    fh.truncate(good)
        self._fh = self.path.open("wb" if fresh else "ab")
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._writer, name="streamsynth-journal", daemon=True)
        self._thread.start()
        if fresh:
            self._put({"run": run_fingerprint, "version": 1})

    @property
    def resumed(self) -> bool:
        return bool(self.items) or self.fitted is not None

    def _put(self, obj: dict[str, Any]) -> None:
        if self._error is not None:
            raise OutputError(f"cannot write the run journal {self.path}: {self._error}; check free disk space")
        self._queue.put((to_json(obj) + "\n").encode("utf-8"))

    def write_fitted(self, fitted: dict[str, Any], *, cost: Cost = Cost(), calls: int = 0) -> None:
        """What the program learned before the first item, and what learning it cost."""
        self.fitted = fitted
        self._put({"fitted": fitted, "cost": cost.to_dict(), "calls": calls})

    def append(self, index: int, samples: list[Sample], *, cost: Cost = Cost(), calls: int = 0) -> None:
        """One finished item: its samples, its cost and how many model calls it made."""
        self.items[index] = samples
        self._put({"item": index, "samples": [s.to_dict() for s in samples], "cost": cost.to_dict(), "calls": calls})

    def _writer(self) -> None:
        last_sync = time.monotonic()
        while True:
            first = self._queue.get()
            batch = [first]
            while True:  # take whatever else is waiting: one flush per batch
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(b is _STOP for b in batch)
            try:
                self._fh.write(b"".join(b for b in batch if b is not _STOP))
                self._fh.flush()  # in the OS from here on: a killed process loses nothing written
                if stop or time.monotonic() - last_sync > 1.0:
                    os.fsync(self._fh.fileno())  # and on disk, at most a second later
                    last_sync = time.monotonic()
            except OSError as exc:
                self._error = exc
            if stop:
                return

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._fh.close()
        if self._error is not None:
            raise OutputError(f"cannot write the run journal {self.path}: {self._error}; check free disk space")
