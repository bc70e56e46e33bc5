"""The live progress display: accepted, rejected, calls, tokens, rate and ETA."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from streamsynth.runtime.runner import RunStats


class LiveProgress:
    """A rich progress bar over the query budget; plain log lines when not on a terminal."""

    def __init__(self, task_name: str, budget: int | None, *, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self.budget = budget
        self.task_name = task_name
        self._last_line = 0.0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} queries"),
            TextColumn("[green]{task.fields[accepted]} ok[/] [red]{task.fields[rejected]} rejected[/]"),
            TextColumn("{task.fields[calls]} calls, {task.fields[cached]} cached, {task.fields[tokens]} tok, {task.fields[rate]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._id = None

    def __enter__(self) -> "LiveProgress":
        if self.live:
            self._progress.start()
            self._id = self._progress.add_task(
                self.task_name, total=self.budget, accepted=0, rejected=0, calls=0, cached=0, tokens=0, rate="0"
            )
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self._progress.stop()

    def update(self, st: RunStats) -> None:
        if not self.enabled:
            return
        if self.live and self._id is not None:
            self._progress.update(
                self._id, completed=st.queries, accepted=st.accepted, rejected=st.rejected, calls=st.calls,
                cached=st.cached_calls, tokens=st.tokens, rate=f"{st.tokens_per_s:.0f}",
            )
            return
        now = time.monotonic()
        if now - self._last_line >= 5 or (self.budget and st.queries >= self.budget):
            self._last_line = now
            total = f"/{self.budget}" if self.budget else ""
            print(
                f"[{self.task_name}] {st.queries}{total} queries: {st.accepted} accepted, {st.rejected} rejected, "
                f"{st.calls} calls, {st.cached_calls} cached, {st.tokens} tokens, {st.tokens_per_s:.0f} tok/s, "
                f"{st.elapsed_s:.0f}s",
                file=sys.stderr,
                flush=True,
            )
