"""The run loop: plan items, run them concurrently, check and select in index order.

- Items are planned in index order; item ``i`` is a pure function of (task, i, seed), and every
  model call it makes is keyed by (item, step, k). Up to ``engine.max_in_flight`` items run at
  once; budget for an item's most calls is reserved before it starts and the rest handed back.
- Finished items go to the journal (when there is one) as they finish. Checks run over finished
  items in index order, as soon as a contiguous run of them is done; set-level work (duplicates,
  selection) sees samples in index order too. So the same config and seed give the same data
  set whatever the concurrency, the batch size, the order of completion, or the cache.
- With ``target``, the run stops planning once the accepted samples of the items up to some
  index reach it (counted as the selector will keep them, when it says: ``kept_count``, so a
  label-balanced set has the target's size), and keeps exactly the items up to that index.
- It stops cleanly on the budget, the target, a cancel (Ctrl-C) or a lost backend, and returns
  everything finished so far.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from streamsynth.errors import BackendError, ConfigError
from streamsynth.methods.base import Item
from streamsynth.program import SynthesisProgram
from streamsynth.quality.checks import calls_per_sample, verify_batch
from streamsynth.records import Sample
from streamsynth.runtime.engine import Engine
from streamsynth.runtime.gcpolicy import throughput_gc
from streamsynth.runtime.journal import Journal
from streamsynth.runtime.lm import ItemLM
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
    items: int = 0
    in_flight: int = 0

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
    items: int = 0
    resumed_items: int = 0
    #: model calls made before the first item (e.g. proposing attributes)
    setup_queries: int = 0

    def rejected_by_reason(self) -> dict[str, int]:
        return dict(Counter(s.reject_category or "unknown" for s in self.rejected).most_common())


class _Checker:
    """Runs the checks over finished items in index order (contiguous prefix first).

    Checks that call the model get one ``ItemLM`` per sample, keyed by the sample's item (step =
    the check's name), so their answers do not depend on concurrency. Their budget is per item:
    the run loop reserves ``check_calls`` queries for each sample the item may write (``held``)
    when it starts the item; a sample spends only its own item's reservation, and what is left
    (a sample rejected before the check, an item that wrote fewer samples) is handed back once
    the item is checked. After an interruption or a lost backend (``model_calls = False``) no new
    model call is made: samples that would need one are rejected as ``unchecked``, with the reason.
    """

    def __init__(self, program: SynthesisProgram, task: Task, engine: Engine) -> None:
        self.program, self.task, self.engine = program, task, engine
        self.next = 0  # the first index not yet checked
        self.kept: list[Sample] = []
        self.rejected: list[Sample] = []
        self.cut: int | None = None  # with a target: the last index kept
        self.check_calls = sum(calls_per_sample(c) for c in program.checks)
        self.held: dict[int, int] = {}  # item index -> queries reserved for its samples' model checks
        self.model_calls = True
        self.failure: BaseException | None = None  # a model check lost its backend or was cancelled
        # with a target: how many of the kept samples the selector will keep (LabelBalance keeps
        # fewer than pass the checks), from the kept samples' label counts
        self._selectable = getattr(program.selector, "kept_count", None)
        self._labels: Counter[str] = Counter()

    async def advance(self, done: dict[int, list[Sample]], *, upto: int | None = None, target: int | None = None) -> None:
        """Check the items ``next..`` that are finished (all of them in order when ``upto`` is set).

        ``next`` moves past a chunk only once its samples are taken, so a chunk whose checks fail
        (a lost backend, a cancel) is still there for the last pass."""
        if upto is None:
            indices, i = [], self.next
            while i in done:
                indices.append(i)
                i += 1
        else:
            indices = sorted(i for i in done if self.next <= i <= upto)
        if self.cut is not None:
            indices = [i for i in indices if i <= self.cut]
        # checks in chunks of items, so a target is found at the right item; item by item when model
        # checks would otherwise judge (and pay for) samples past the target's cut
        size = 1 if target is not None and self.cut is None and self.check_calls else 64
        for start in range(0, len(indices), size):
            chunk = indices[start : start + size]
            samples = [s for i in chunk for s in done[i]]
            avail = {i: self.held.pop(i, 0) for i in chunk}
            try:
                samples = await self._check(samples, avail)
            finally:
                self.engine.meter.release(sum(avail.values()))
            reached = False
            if target is not None and self.cut is None:
                for i in chunk:
                    mine = [s for s in samples if s.provenance.sample_index == i]
                    self._take(mine)
                    if self.selectable() >= target:
                        self.cut = i
                        reached = True
                        break
            else:
                self._take(samples)
            self.next = max(self.next, chunk[-1] + 1)
            if self.failure is not None:  # the chunk is taken (nothing lost); now the run loop hears of it
                failure, self.failure = self.failure, None
                raise failure
            if reached:
                return
        if upto is not None:
            self.next = max(self.next, upto + 1)

    def _take(self, samples: list[Sample]) -> None:
        for s in samples:
            (self.kept if s.accepted else self.rejected).append(s)
            if s.accepted:
                self._labels[s.output] += 1

    def selectable(self) -> int:
        """How many of the samples kept so far the selector will keep."""
        return self._selectable(self._labels, self.task) if self._selectable is not None else len(self.kept)

    def hold(self, index: int, samples: int) -> bool:
        """Reserve the model checks' calls for ``samples`` samples of item ``index``; False if the budget cannot."""
        need = self.check_calls * samples
        if not need:
            return True
        granted = self.engine.meter.reserve(need)
        if granted < need:
            self.engine.meter.release(granted)
            return False
        self.held[index] = need
        return True

    def release_held(self, index: int | None = None) -> None:
        """Hand back what was reserved for the model checks of ``index`` (of every item when None)."""
        if index is None:
            self.engine.meter.release(sum(self.held.values()))
            self.held.clear()
        else:
            self.engine.meter.release(self.held.pop(index, 0))

    async def _check(self, samples: list[Sample], avail: dict[int, int]) -> list[Sample]:
        for check in self.program.checks:
            todo = [i for i, s in enumerate(samples) if s.accepted]
            if not todo:
                break
            cps = calls_per_sample(check)
            if cps:
                await self._model_check(check, cps, samples, todo, avail)
                continue
            try:
                verdicts = await verify_batch(check, [samples[i] for i in todo], self.task)
            except asyncio.CancelledError as exc:
                # cancelled inside a check (Ctrl-C while it ran in a thread): the checks before it may
                # have remembered these samples (duplicates), so judging the chunk again in the last
                # pass would reject them as copies of themselves; keep it whole, as unchecked
                self.model_calls = False
                self.failure = exc
                for i in todo:
                    samples[i] = _unchecked(samples[i], check.name)
                break
            for i, v in zip(todo, verdicts):
                samples[i] = samples[i].with_verdict(v)
        return samples

    async def _model_check(self, check: Any, cps: int, samples: list[Sample], todo: list[int],
                           avail: dict[int, int]) -> None:
        """Run a check that calls the model; its calls become steps of each sample's provenance."""
        granted: list[int] = []
        for i in todo:
            item = samples[i].provenance.sample_index
            if not self.model_calls:
                samples[i] = _unchecked(samples[i], check.name)
            elif avail.get(item, 0) < cps:  # deterministic: the item wrote more samples than its plan said
                samples[i] = samples[i].reject(
                    "budget", f"item {item} wrote more samples than its plan's max_samples, so none of its "
                              f"reserved calls is left for the {check.name} check; raise max_samples in plan()")
            else:
                avail[item] -= cps
                granted.append(i)
        if not granted:
            return
        lms = [ItemLM(self.engine, index=samples[i].provenance.sample_index, seed=samples[i].provenance.seed,
                      max_calls=cps) for i in granted]
        try:
            verdicts = await verify_batch(check, [samples[i] for i in granted], self.task, lms)
        except (BackendError, asyncio.CancelledError) as exc:
            # keep the chunk whole (its other checks ran and set-level checks remember it): these
            # samples are rejected as unchecked, no more model calls, and advance() raises it after
            self.model_calls = False
            self.failure = exc
            for i in granted:
                samples[i] = _unchecked(samples[i], check.name)
            return
        finally:  # calls not made (or not answered) go back with the item's reservation
            for i, lm in zip(granted, lms):
                avail[samples[i].provenance.sample_index] += cps - len(lm.steps)
        for i, lm, v in zip(granted, lms, verdicts):
            s = samples[i]
            if lm.steps:
                prov = dataclasses.replace(s.provenance, steps=s.provenance.steps + tuple(lm.steps))
                s = dataclasses.replace(s, provenance=prov, cost=s.cost + lm.cost)
            samples[i] = s.with_verdict(v)


def _unchecked(sample: Sample, check: str) -> Sample:
    """A sample a check could not judge because the run stopped (a rerun judges it)."""
    return sample.reject("unchecked", f"the run stopped before the {check} check could judge it; rerun to check it")


async def _prepare(program: SynthesisProgram, task: Task, engine: Engine, seed: int) -> None:
    """Each method's one-time work, with budget reserved for its calls (setup items -1, -2, ...)."""
    for j, method in enumerate(program.methods):
        prepare = getattr(method, "prepare", None)
        if prepare is None:
            continue
        calls = int(getattr(method, "setup_calls", lambda t: 1)(task))
        granted = engine.meter.reserve(calls)
        lm = ItemLM(engine, index=-1 - j, seed=seed, max_calls=granted)
        try:
            await prepare(task, lm if granted else None)
        finally:
            engine.meter.release(granted - len(lm.steps))


async def synthesize(
    task: Task,
    program: SynthesisProgram,
    engine: Engine,
    *,
    seed: int = 0,
    target: int | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    journal: Journal | None = None,
) -> RunResult:
    """Run a fresh copy of ``program`` on ``task`` until the budget is spent (or ``target`` is reached)."""
    with throughput_gc():  # fewer garbage collections while thousands of requests are in flight
        return await _synthesize(task, program, engine, seed=seed, target=target, on_progress=on_progress,
                                 journal=journal)


async def _synthesize(
    task: Task,
    program: SynthesisProgram,
    engine: Engine,
    *,
    seed: int,
    target: int | None,
    on_progress: Callable[[RunStats], None] | None,
    journal: Journal | None,
) -> RunResult:
    t0 = time.perf_counter()
    meter = engine.meter
    unbounded = meter.max_queries is None and meter.max_tokens is None and meter.max_dollars is None
    if unbounded and target is None:
        raise ValueError("give a budget (max_queries, max_tokens or max_dollars) or a target; the run would not end")
    if unbounded and getattr(program.selector, "kept_count", None) is not None:
        raise ValueError(f"give a budget with the target: the {program.selector.name} selector may never keep {target} "
                         "samples (a label whose samples keep failing the checks caps the others), and the run would not end")
    program = program.fresh()  # the caller's program is never changed
    done: dict[int, list[Sample]] = {}
    resumed = 0
    if journal is not None and journal.resumed:
        # what the killed run had finished counts against the budget, as it did then
        done = dict(journal.items)
        resumed = len(done)
        meter.restore(journal.cost, journal.calls)
    checker = _Checker(program, task, engine)
    in_flight: dict[asyncio.Task, Item] = {}
    stopped: str | None = None
    failure: BackendError | None = None
    setup_queries = 0

    def stats() -> RunStats:
        c = meter.cost
        return RunStats(
            accepted=len(checker.kept), rejected=len(checker.rejected), queries=meter.queries, calls=c.calls,
            cached_calls=c.cached_calls, tokens=c.tokens, completion_tokens=c.completion_tokens,
            budget=meter.max_queries, elapsed_s=time.perf_counter() - t0, generated_tokens=meter.generated_tokens,
            items=len(done), in_flight=len(in_flight),
        )

    async def run_item(item: Item, method: Any) -> tuple[Item, list[Sample], ItemLM]:
        lm = ItemLM(engine, index=item.index, seed=item.seed, max_calls=item.max_calls)
        samples = await method.run(item, lm)
        twice = sorted(i for i, n in Counter(s.id for s in samples).items() if n > 1)
        if twice:  # the checks and the journal tell samples apart by id
            raise ConfigError(f"method {item.method!r} wrote several samples with the id {twice[0]!r} for item "
                              f"{item.index}; give each sample of an item its own number (new_sample(..., k=1), k=2, ...)")
        return item, samples, lm

    # finished items reach the loop through their done callbacks (asyncio.wait would add and remove a
    # callback on every item in flight, thousands of them, each time one finishes)
    finished_q: list[asyncio.Task] = []
    wake = asyncio.Event()

    def on_done(fut: asyncio.Task) -> None:
        finished_q.append(fut)
        wake.set()

    try:
        if journal is not None and journal.fitted is not None:
            program.restore_fitted(journal.fitted)
            setup_queries = int(journal.fitted.get("_setup_calls", 0))
        else:
            before, calls_before = meter.cost, meter.queries
            await _prepare(program, task, engine, seed)
            setup_queries = meter.queries - calls_before
            if journal is not None:
                journal.write_fitted(program.fitted_state(), calls=meter.queries - calls_before, cost=meter.cost - before)
        for check in program.checks:
            start = getattr(check, "start", None)
            if start is not None:
                start(task)
        if checker.check_calls:  # journaled items: their model checks' calls, as when they ran
            for i in sorted(done):
                checker.hold(i, program.methods[i % len(program.methods)].plan(task, i, seed).max_samples)
        await checker.advance(done, target=target)
        if on_progress:
            on_progress(stats())
        index = 0

        def refill() -> None:
            """Plan and start items in index order until the engine's in-flight limit is reached."""
            nonlocal index, stopped
            while stopped is None and len(in_flight) < engine.max_in_flight:
                if target is not None and checker.cut is not None:
                    stopped = "target"
                    break
                if index in done:
                    index += 1
                    continue
                method = program.methods[index % len(program.methods)]
                item = method.plan(task, index, seed)
                # the item's most calls, plus its samples' model checks: never start an item that could be cut in half
                granted = meter.reserve(item.max_calls)
                if granted < item.max_calls or not checker.hold(item.index, item.max_samples):
                    meter.release(granted)
                    # no latch: calls an item did not need come back when it is done (and a model
                    # check's when its sample was rejected before it), so this is tried again after
                    # the next batch; the loop ends when nothing is in flight. The items that run
                    # are then the same whatever the timing: 0..M-1, with M the first item the
                    # budget cannot cover once everything before it is spent.
                    break
                fut = asyncio.ensure_future(run_item(item, method))
                fut.add_done_callback(on_done)
                in_flight[fut] = item
                index += 1

        refill()
        while in_flight:
            while not finished_q:
                wake.clear()
                await wake.wait()
            finished = [f for f in finished_q if f in in_flight]
            finished_q.clear()
            errors = []
            for fut in sorted(finished, key=lambda f: in_flight[f].index):
                item = in_flight.pop(fut)
                if fut.exception() is not None:
                    errors.append(fut.exception())
                    meter.release(item.max_calls)
                    checker.release_held(item.index)
                    continue
                _, samples, lm = fut.result()
                meter.release(item.max_calls - len(lm.steps))
                done[item.index] = samples
                if journal is not None:
                    journal.append(item.index, samples, cost=lm.cost, calls=len(lm.steps))
            if errors:  # every finished item is kept first; then a BackendError ends the run below
                raise errors[0]
            if target is None:
                # the freed slots are refilled before the checks run, and the new items get the loop
                # first, so their requests go out while this batch is checked (a burst of answers
                # must not hold back the next requests); with a target the checks decide first
                # whether any more items are needed
                refill()
                await asyncio.sleep(0)
            await checker.advance(done, target=target)
            if on_progress:
                on_progress(stats())
            refill()
    except asyncio.CancelledError:
        stopped = "interrupted"
    except BackendError as exc:  # the backend is gone for good: keep what we have
        stopped = f"backend failed: {exc}"
        failure = exc
    finally:
        for fut, item in in_flight.items():
            fut.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
            for fut, item in in_flight.items():
                if not fut.cancelled() and fut.exception() is None:
                    meter.release(item.max_calls - len(fut.result()[2].steps))
                else:
                    meter.release(item.max_calls)  # its calls were not answered... or are lost with it
                checker.release_held(item.index)  # its samples are not kept, so they are not checked
        in_flight.clear()
    # whatever finished beyond a gap (after an interruption) is checked too, in index order, with no
    # new model call once the run was interrupted or lost its backend
    checker.model_calls = stopped is None or stopped == "target"
    await checker.advance(done, upto=max(done, default=-1), target=target)
    checker.release_held()  # items past a target's cut are never checked
    if stopped == "budget" or stopped is None:
        stopped = meter.exhausted_reason() or ("target" if checker.cut is not None else "budget")
    selected = program.selector.select(checker.kept, task, seed=seed)
    chosen = {s.id for s in selected}
    rejected = list(checker.rejected)
    left_out = [s for s in checker.kept if s.id not in chosen]
    explain = getattr(program.selector, "explain", None)
    reasons = explain(left_out, task, checker.kept) if explain is not None else [f"not chosen by {program.selector.name}"] * len(left_out)
    rejected += [s.reject("selection", why) for s, why in zip(left_out, reasons)]
    final = dataclasses.replace(stats(), accepted=len(selected), rejected=len(rejected))
    return RunResult(
        task=task, accepted=selected, rejected=rejected, stopped_reason=stopped, wall_s=time.perf_counter() - t0,
        stats=final, program_state=program.dump_state(), failure=failure, items=len(done), resumed_items=resumed,
        setup_queries=setup_queries,
    )
