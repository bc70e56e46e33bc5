"""The library entry point: ``generate`` a data set for a task (``agenerate`` from async code)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from streamsynth.backends.base import Backend
from streamsynth.fingerprint import fingerprint
from streamsynth.output import build_manifest, check_output_dir, write_run
from streamsynth.program import SynthesisProgram, default_program
from streamsynth.runtime import BudgetMeter, Engine, Prices, ResponseCache
from streamsynth.runtime.journal import Journal
from streamsynth.runtime.runner import RunResult, RunStats, synthesize
from streamsynth.task import Task, load_task
from streamsynth import aio


@dataclass(frozen=True)
class GenerateReport:
    result: RunResult
    manifest: dict[str, Any]
    files: dict[str, str]


def run_fingerprint(task: Task, program: SynthesisProgram, model_id: str, *, seed: int, budget: dict[str, Any]) -> str:
    """Identity of a run: the same task, program, model, seed and budget give the same data set."""
    return fingerprint(
        {"task": task.fingerprint, "program": program.config_state(), "model": model_id, "seed": seed, "budget": budget}
    )


async def agenerate(
    task: Task | str | os.PathLike,
    backend: Backend,
    *,
    budget: int | None,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    cache: ResponseCache | None = None,
    program: SynthesisProgram | None = None,
    target: int | None = None,
    max_tokens: int | None = None,
    max_dollars: float | None = None,
    prices: Prices | None = None,
    overwrite: bool = False,
    on_progress: Callable[[RunStats], None] | None = None,
    config: dict[str, Any] | None = None,
    max_in_flight: int | None = None,
    on_start: Callable[[], None] | None = None,
) -> GenerateReport:
    """Synthesize for ``task`` with ``backend`` until the budget is spent; write ``out`` if given."""
    if not isinstance(task, Task):
        task = load_task(task)
    program = program or default_program(task)
    budget_cfg = {"max_queries": budget, "max_tokens": max_tokens, "max_dollars": max_dollars, "target": target}
    run_fp = run_fingerprint(task, program, backend.model_id, seed=seed, budget=budget_cfg)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        check_output_dir(out_dir, run_fp, overwrite=overwrite)
    meter = BudgetMeter(budget, max_tokens=max_tokens, max_dollars=max_dollars, prices=prices)
    engine = Engine(backend, meter, cache, max_in_flight=max_in_flight)
    journal = Journal(out_dir, run_fp) if out_dir is not None else None
    if on_start is not None:
        on_start()
    try:
        result = await synthesize(task, program, engine, seed=seed, target=target, on_progress=on_progress, journal=journal)
    finally:
        await engine.aclose()
        if journal is not None:
            journal.close()
    full_config = {"model": backend.model_id, "budget": budget_cfg, **(config or {})}
    manifest = build_manifest(result, config=full_config, run_fingerprint=run_fp, seed=seed)
    manifest["usage"]["dollars"] = round(meter.cost.dollars, 6)
    manifest["usage"]["failed_calls"] = meter.failed
    manifest["usage"]["items"] = result.items
    manifest["usage"]["resumed_items"] = result.resumed_items
    files = write_run(out_dir, result, manifest) if out_dir is not None else {}
    if journal is not None and result.failure is None and result.stopped_reason != "interrupted":
        journal.path.unlink(missing_ok=True)  # finished: everything is in the output files now
    if result.failure is not None:
        kept = f"; the {len(result.accepted)} samples made before it are in {out_dir}" if out_dir is not None else ""
        raise type(result.failure)(f"{result.failure}{kept}") from result.failure
    return GenerateReport(result=result, manifest=manifest, files=files)


def generate(task: Task | str | os.PathLike, backend: Backend, **kwargs: Any) -> GenerateReport:
    """Synchronous twin of ``agenerate``."""
    async def _main() -> GenerateReport:
        try:
            return await agenerate(task, backend, **kwargs)
        finally:
            close = getattr(backend, "aclose", None)
            if close is not None:
                await close()

    return aio.run(_main())
