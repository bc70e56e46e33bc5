"""The run loop: propose, complete, parse, check, select, until the budget is spent.

Sample indices are assigned in order and every proposal is a pure function of (task, index,
seed), so the same config and seed give the same data set whatever the batch size, and whether
responses come fresh or from the cache. The loop stops cleanly on the budget cap, on reaching
``target`` accepted samples, or when it is cancelled (Ctrl-C), and returns all it has.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from streamsynth.errors import BackendError
from streamsynth.program import SynthesisProgram
from streamsynth.records import Sample
from streamsynth.runtime.engine import Engine
from streamsynth.task import Task


@dataclass(frozen=True, slots=True)
class RunStats:
    """A snapshot for progress displays."""

    accepted: int
    rejected: int
    queries: int
    calls: int
    cached_calls: int
    tokens: int
    completion_tokens: int
    budget: int | None
    elapsed_s: float
    generated_tokens: int = 0

    @property
    def tokens_per_s(self) -> float:
        """Tokens the model generated per second in this run (cache hits excluded)."""
        return self.generated_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class RunResult:
    task: Task
    accepted: list[Sample]
    rejected: list[Sample]
    stopped_reason: str
    wall_s: float
    stats: RunStats
    program_state: dict[str, Any] = field(default_factory=dict)
    #: set when the backend failed for good; the samples before it are kept
    failure: BaseException | None = None

    def rejected_by_reason(self) -> dict[str, int]:
        return dict(Counter(s.reject_category or "unknown" for s in self.rejected).most_common())


async def synthesize(
    task: Task,
    program: SynthesisProgram,
    engine: Engine,
    *,
    seed: int = 0,
    target: int | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
) -> RunResult:
    """Run ``program`` on ``task`` until the engine's budget is spent (or ``target`` is reached)."""
    t0 = time.perf_counter()
    meter = engine.meter
    if meter.max_queries is None and meter.max_tokens is None and meter.max_dollars is None and target is None:
        raise ValueError("give a budget (max_queries, max_tokens or max_dollars) or a target; the run would not end")
    kept: list[Sample] = []
    rejected: list[Sample] = []
    stopped = "budget"
    failure: BackendError | None = None

    def stats() -> RunStats:
        c = meter.cost
        return RunStats(
            accepted=len(kept), rejected=len(rejected), queries=meter.queries, calls=c.calls,
            cached_calls=c.cached_calls, tokens=c.tokens, completion_tokens=c.completion_tokens,
            budget=meter.max_queries, elapsed_s=time.perf_counter() - t0, generated_tokens=meter.generated_tokens,
        )

    try:
        for strategy in program.strategies:
            await strategy.prepare(task, engine, seed=seed)
        for check in program.checks:
            start = getattr(check, "start", None)
            if start is not None:
                start(task)
        if on_progress:
            on_progress(stats())
        index, batch_no = 0, 0
        while True:
            if target is not None and len(kept) >= target:
                stopped = "target"
                break
            n = engine.batch_size
            if meter.remaining_queries is not None:
                n = min(n, meter.remaining_queries)
            if n <= 0:
                break
            strategy = program.strategies[batch_no % len(program.strategies)]
            proposals = strategy.propose(task, range(index, index + n), seed=seed)
            completions = await engine.complete([p.request for p in proposals])
            if not completions:
                break
            for proposal, completion in zip(proposals, completions):
                sample = strategy.parse(task, proposal, completion, model_id=engine.model_id, cost=meter.cost_of(completion))
                for check in program.checks:
                    if not sample.accepted:
                        break
                    sample = sample.with_verdict(check.verify(sample, task))
                (kept if sample.accepted else rejected).append(sample)
            index += len(completions)
            batch_no += 1
            if on_progress:
                on_progress(stats())
            if meter.exhausted_reason() is not None:
                break
    except asyncio.CancelledError:
        stopped = "interrupted"
    except BackendError as exc:  # the backend is gone for good: keep what we have
        stopped = f"backend failed: {exc}"
        failure = exc
    selected = program.selector.select(kept, task, seed=seed)
    chosen = {s.id for s in selected}
    for s in kept:
        if s.id not in chosen:
            rejected.append(s.reject("selection", f"not chosen by {program.selector.name}"))
    if stopped == "budget":
        stopped = meter.exhausted_reason() or "budget"
    final = dataclasses.replace(stats(), accepted=len(selected), rejected=len(rejected))
    return RunResult(
        task=task,
        accepted=selected,
        rejected=rejected,
        stopped_reason=stopped,
        wall_s=time.perf_counter() - t0,
        stats=final,
        program_state=program.state(),
        failure=failure,
    )
