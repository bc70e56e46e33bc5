"""``streamsynth``: generate training data with LLMs.

Every user mistake ends in one line that says what is wrong and what to do (exit code 2), never
in a traceback.
"""

from __future__ import annotations

import functools
import json
import os
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from streamsynth.errors import StreamsynthError
from streamsynth import aio

app = typer.Typer(
    name="streamsynth",
    help="Generate fine-tuning and training data with LLMs: plan, generate, check, select, write with provenance.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)  # an error stays one line, whatever the terminal width


class BackendKind(str, Enum):
    local = "local"
    openai = "openai"
    fake = "fake"


def _friendly(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StreamsynthError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        except ValueError as exc:  # invalid option combinations from the library
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        except OSError as exc:  # a path that cannot be made, read or written: no traceback for that
            from rich.markup import escape

            where = f"{escape(str(exc.filename))}: " if exc.filename else ""
            err.print(f"[bold red]error:[/] {where}{escape(exc.strerror or str(exc))}; check the path, its permissions "
                      "and free disk space", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def _make_backend(kind: BackendKind, *, model, base_url, api_key_env, concurrency, timeout, batch_size, cache_dir,
                  dtype="float32", adapter=None):
    from streamsynth.errors import ConfigError

    if kind is BackendKind.local:
        from streamsynth.backends.local_hf import LocalHFBackend

        return LocalHFBackend(model, cache_dir=cache_dir, batch_size=batch_size, dtype=dtype, adapter=adapter)
    if kind is BackendKind.openai:
        from streamsynth.backends.openai_http import OpenAIChatBackend

        base_url = base_url or os.environ.get("STREAMSYNTH_BASE_URL")
        if not base_url or not model:
            raise ConfigError(
                "--backend openai needs --base-url (or STREAMSYNTH_BASE_URL) and --model, "
                "e.g. --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct"
            )
        return OpenAIChatBackend(
            base_url=base_url, model=model, api_key_env=api_key_env or None, concurrency=concurrency, timeout_s=timeout
        )
    from streamsynth.backends.fake import FakeBackend

    return FakeBackend(model=model or "fake")


@app.command()
@_friendly
def generate(
    spec: Path = typer.Argument(..., help="Task spec (YAML), e.g. examples/sst2.yaml."),
    budget: int = typer.Option(300, "--budget", "-b", min=1, help="Most synthesizer queries to spend (cached answers count too, so reruns are identical)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder [default: runs/<task name>]."),
    backend: BackendKind = typer.Option(BackendKind.local, help="local: a model on this machine (default: embedded SmolLM2-135M-Instruct); openai: any OpenAI-compatible server; fake: test replies."),
    model: Optional[str] = typer.Option(None, help="local: a .gguf file or Hugging Face model folder; openai: the model name."),
    base_url: Optional[str] = typer.Option(None, help="openai: server URL ending in /v1 [env: STREAMSYNTH_BASE_URL]."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="openai: NAME of the environment variable holding the API key (the key itself is never logged or stored)."),
    concurrency: int = typer.Option(64, min=1, help="openai: requests in flight."),
    timeout: float = typer.Option(60.0, min=0.1, help="openai: seconds before a request is retried."),
    batch_size: int = typer.Option(64, min=1, help="local: most sequences decoded at once (continuous batching)."),
    dtype: str = typer.Option("float32", help="local: float32 (default: the same data set at any concurrency) or bfloat16 (about 1.7x faster on CPUs with native bf16, but a text may change with the company it is batched with; auto picks it where native)."),
    seed: int = typer.Option(0, help="Seed for sampling and every random choice; the same config and seed give the same data set."),
    target: Optional[int] = typer.Option(None, min=1, help="Stop once the data set has at least this many samples (after the checks and the label balance)."),
    max_tokens: Optional[int] = typer.Option(None, min=1, help="Hard cap on tokens (prompt + completion)."),
    max_dollars: Optional[float] = typer.Option(None, min=0, help="Hard cap on dollars spent (needs prices)."),
    price_prompt: float = typer.Option(0.0, min=0, help="Dollars per million prompt tokens."),
    price_completion: float = typer.Option(0.0, min=0, help="Dollars per million completion tokens."),
    cache_dir: Optional[Path] = typer.Option(None, help="Response cache and converted models [default: $STREAMSYNTH_CACHE_DIR or ~/.cache/streamsynth]."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the response cache."),
    overwrite: bool = typer.Option(False, help="Replace an output folder that holds a different run."),
    store: Optional[Path] = typer.Option(None, help="Experience store written by `streamsynth stream`: start from what earlier tasks taught (pattern priors, lessons, exemplars)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Generate a labeled synthetic data set for the task in SPEC.

    An output folder that holds an unfinished run of the same config (killed, interrupted) is
    resumed: finished items are read from its journal and not generated again.
    """
    params = {k: v for k, v in locals().items()}
    params["spec"] = str(Path(spec).resolve())
    params["backend"] = backend.value
    for k in ("out", "cache_dir", "store"):
        params[k] = str(Path(params[k]).resolve()) if params[k] is not None else None
    _generate(**params)


def _generate(*, spec, budget, out, backend, model, base_url, api_key_env, concurrency, timeout, batch_size, seed,
              dtype="float32",
              target, max_tokens, max_dollars, price_prompt, price_completion, cache_dir, no_cache, overwrite,
              quiet, store=None) -> None:
    command = {k: v for k, v in locals().items() if k != "quiet"}  # what `resume` needs; never the key itself
    from streamsynth.api import agenerate
    from streamsynth.backends.local_hf import default_cache_dir
    from streamsynth.cli.progress import LiveProgress
    from streamsynth.errors import ConfigError
    from streamsynth.runtime import Prices, ResponseCache
    from streamsynth.task import load_task

    backend = BackendKind(backend)
    spec, cache_dir = Path(spec), Path(cache_dir) if cache_dir is not None else None
    task = load_task(spec)
    if max_dollars is not None and not (price_prompt or price_completion):
        raise ConfigError("--max-dollars needs --price-prompt and/or --price-completion to count dollars")
    cache_root = cache_dir or default_cache_dir()
    be = _make_backend(
        backend, model=model, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency,
        timeout=timeout, batch_size=batch_size, cache_dir=cache_root, dtype=dtype,
    )
    cache = None if no_cache else ResponseCache(cache_root / "responses.sqlite")
    program = _program_from_store(task, Path(store)) if store is not None else None
    if store is not None and backend is BackendKind.local:
        ref = _adapter_from_store(Path(store), be)
        if ref is not None:
            be = be.with_adapter(ref)  # not loaded yet: nothing to close
    out_dir = Path(out) if out is not None else Path("runs") / task.name
    command["out"] = str(out_dir.resolve())
    progress = LiveProgress(task.name, budget, console=err, enabled=not quiet)
    command_file = out_dir / RUN_COMMAND
    config = {"backend": backend.value, "spec": str(spec), "cache": not no_cache}

    async def _run():
        try:
            with progress:
                return await agenerate(
                    task, be, budget=budget, out=out_dir, seed=seed, cache=cache, target=target, program=program,
                    max_tokens=max_tokens, max_dollars=max_dollars,
                    prices=Prices(price_prompt, price_completion), overwrite=overwrite,
                    on_progress=progress.update, config=config,
                    on_start=lambda: _write_command(command_file, command),
                )
        finally:
            await be.aclose()

    try:
        report = aio.run(_run())
    except KeyboardInterrupt:  # interrupted before the run loop could stop cleanly
        err.print("[yellow]interrupted[/]: rerun the same command to continue from the cache")
        raise typer.Exit(130) from None
    finally:
        if cache is not None:
            cache.close()
    _summary(report)
    if report.result.resumed_items:
        err.print(f"resumed: {report.result.resumed_items} finished items read from the journal in {out_dir}", highlight=False)
    if report.result.stopped_reason == "interrupted":
        err.print(f"[yellow]interrupted[/]: the samples made so far are in {out_dir}; rerun to continue from the cache")
        raise typer.Exit(130)


RUN_COMMAND = "command.json"


def _program_from_store(task, store_path: Path):
    """The learning program for ``task``, started from the experience in ``store_path``."""
    from streamsynth.errors import ConfigError
    from streamsynth.eval.embedder import Embedder
    from streamsynth.learn.learner import descriptor_text
    from streamsynth.learn.store import ExperienceStore
    from streamsynth.learn.stream import program_from_store

    if not store_path.is_file():
        raise ConfigError(f"--store {store_path}: no such file; give the store a `streamsynth stream` run wrote")
    with ExperienceStore(store_path) as st:
        program, experience, explorer = program_from_store(task, st, descriptor=Embedder().encode([descriptor_text(task)])[0])
    used = experience.summary()
    if explorer["space"] is not None or explorer["draw"] != "joint":
        space = explorer["space"] or "the default pattern space"
        err.print(f"experience from {store_path}: exploring as the stream that wrote it did ({explorer['draw']} draw, "
                  f"{space})", highlight=False)
    similar = ", ".join(f"{x['task']} ({x['similarity']:.2f})" for x in used["similar_tasks"]) or "none"
    err.print(f"experience from {store_path}: similar tasks {similar}; guidance: {used['guidance'] or '-'}", highlight=False)
    return program


def _adapter_from_store(store_path: Path, be):
    """The LoRA adapter a `stream` with weight learning left in the store, when it fits ``be``'s model."""
    from streamsynth.learn.store import ExperienceStore
    from streamsynth.learn.stream import stored_adapter

    with ExperienceStore(store_path) as st:
        ref, note = stored_adapter(st, be)
    if note:
        err.print(f"experience from {store_path}: {note}", highlight=False)
    return ref


def _write_command(path: Path, command: dict) -> None:
    from streamsynth.output.writer import write_text_atomic

    write_text_atomic(path, json.dumps(command, indent=2))


@app.command()
@_friendly
def resume(
    run_dir: Path = typer.Argument(..., help="Output folder of an unfinished run (it holds command.json and journal.jsonl)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Resume an unfinished run (killed or interrupted) with the command that started it."""
    from streamsynth.errors import ConfigError

    path = run_dir / RUN_COMMAND
    if not path.is_file():
        raise ConfigError(f"{run_dir} holds no {RUN_COMMAND}; it is not a run started by `streamsynth generate`")
    try:
        command = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON; start the run again with `streamsynth generate`") from None
    if not (run_dir / "journal.jsonl").is_file():
        err.print(f"{run_dir} has no unfinished work (no journal); running its command again reads the cache", highlight=False)
    _generate(**{**command, "quiet": quiet, "overwrite": False})


def _summary(report) -> None:
    m = report.manifest
    u, c = m["usage"], m["counts"]
    table = Table(title=f"streamsynth: {m['task']}", show_header=False)
    table.add_row("accepted", str(c["accepted"]) + "  " + ", ".join(f"{k}: {v}" for k, v in c["accepted_by_label"].items()))
    table.add_row("rejected", str(c["rejected"]) + "  " + ", ".join(f"{k}: {v}" for k, v in c["rejected_by_reason"].items()))
    table.add_row("model calls", f"{u['calls']} new, {u['cached_calls']} from cache, {u['failed_calls']} failed")
    table.add_row("tokens", f"{u['tokens']} ({u['completion_tokens']} generated)")
    if u.get("generated_tokens_per_s"):
        table.add_row("speed", f"{u['generated_tokens_per_s']} generated tok/s (model load included)")
    if u.get("dollars"):
        table.add_row("cost", f"${u['dollars']:.4f}")
    table.add_row("wall time", f"{u['wall_s']:.1f} s")
    table.add_row("stopped", m["stopped_reason"])
    table.add_row("written", report.files.get("samples_jsonl", "-"))
    Console().print(table)


@app.command()
@_friendly
def stream(
    stream_file: Path = typer.Argument(..., help="Stream file (YAML): task specs in order, budget per task, store, learning."),
    out: Path = typer.Option(Path("runs/stream"), "--out", "-o", help="Output folder: one sub-folder per task, and stream.json."),
    budget: Optional[int] = typer.Option(None, min=4, help="Synthesizer queries per task [default: the stream file's]."),
    store: Optional[Path] = typer.Option(None, help="Experience store (SQLite file) [default: the stream file's]."),
    learning: Optional[str] = typer.Option(None, help="Comma-separated: explicit, weights; 'none' for no experience [default: the stream file's]."),
    seed: Optional[int] = typer.Option(None, help="Seed for sampling, rounds and selection [default: the stream file's]."),
    backend: BackendKind = typer.Option(BackendKind.local, help="local (default: embedded SmolLM2-135M-Instruct), openai or fake."),
    model: Optional[str] = typer.Option(None, help="local: a .gguf file or Hugging Face model folder; openai: the model name."),
    base_url: Optional[str] = typer.Option(None, help="openai: server URL ending in /v1 [env: STREAMSYNTH_BASE_URL]."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="openai: NAME of the environment variable holding the API key."),
    concurrency: int = typer.Option(64, min=1, help="openai: requests in flight."),
    batch_size: int = typer.Option(64, min=1, help="local: most sequences decoded at once."),
    cache_dir: Optional[Path] = typer.Option(None, help="Response cache and converted models [default: $STREAMSYNTH_CACHE_DIR or ~/.cache/streamsynth]."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the response cache."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the per-task summary."),
) -> None:
    """Run a stream of tasks, learning from each one for the next (SynLearner).

    For each task: start from experience, generate in rounds with feedback, select, keep only what
    helps on dev data, remember. Rerun the same command to resume an interrupted stream.
    """
    from streamsynth.backends.local_hf import default_cache_dir
    from streamsynth.learn.stream import arun_stream, load_stream
    from streamsynth.runtime import ResponseCache

    overrides = {"budget": budget, "seed": seed, "store": str(store.resolve()) if store is not None else None}
    if learning is not None:
        overrides["learning"] = [] if learning.strip() == "none" else [x.strip() for x in learning.split(",") if x.strip()]
    spec = load_stream(stream_file, **overrides)
    if "weights" in spec.spec.learning and backend is not BackendKind.local:
        from streamsynth.errors import ConfigError

        raise ConfigError(f"'weights' learning trains a local model, and --backend is {backend.value}; "
                          "use --backend local, or --learning explicit to learn without weights")
    cache_root = cache_dir or default_cache_dir()
    cache = None if no_cache else ResponseCache(cache_root / "responses.sqlite")
    con = Console(soft_wrap=True)

    def make(adapter):  # an adapter comes only with 'weights', refused above for any backend but local
        return _make_backend(backend, model=model, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency,
                             timeout=60.0, batch_size=batch_size, cache_dir=cache_root, adapter=adapter)

    def _credit_text(credit):
        if not credit:
            return ""
        (best, b), (worst, w) = credit["best"], credit["worst"]
        return f"; utility credit: best {best} ({b:+.3f}), worst {worst} ({w:+.3f})"

    def show(e):
        kind = e.get("event")
        if kind == "task_start":
            con.print(f"[bold]task {e['position'] + 1}: {e['task']}[/]  model {e['model']}", highlight=False)
        elif kind == "experience" and not quiet:
            used = ", ".join(f"{x['task']} ({x['similarity']:.2f})" for x in e["similar_tasks"]) or "none"
            con.print(f"  experience: similar tasks {used}; guidance: {e['guidance'] or '-'}; "
                      f"exemplars {e['exemplars']}", highlight=False)
        elif kind == "round" and not quiet:
            con.print(f"  round {e['round'] + 1}: {e['calls']} calls, {e['accepted']} accepted, "
                      f"mean reward {e['mean_reward']:.3f}" + _credit_text(e.get("credit")), highlight=False)
        elif kind == "note":
            con.print(f"  {e['text']}", highlight=False)
        elif kind == "weights":
            con.print(f"  weights: LoRA adapter trained in {e['seconds']:.1f} s", highlight=False)
        elif kind == "task_resumed":
            con.print(f"[dim]task {e['position'] + 1}: {e['task']} already done (resumed)[/]", highlight=False)
        elif kind == "task_done":
            u = e["utility"]
            con.print(
                f"  done: {e['calls']} calls, {e['kept']} of {e['samples']} samples kept; mean reward {e['mean_reward']:.3f}; "
                + (f"kept set: label {e['mean_label']:.3f}, quality {e['mean_quality']:.3f}, diversity {e['diversity']:.3f}, "
                   f"distinct-2 {e['distinct_2']:.3f}; " if e["kept"] else "kept set: empty; ")
                + f"dev utility ({u['method']}) seeds {u['seed_only']:.3f} -> "
                f"{float(u['scores'].get(str(u['kept']), u['seed_only'])):.3f} with what was kept; {e['wall_s']:.0f} s",
                highlight=False)
            con.print(f"  {e['message']}", highlight=False)

    try:
        outcomes = aio.run(arun_stream(spec, out=out, make_backend=make, cache=cache, on_event=show))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: rerun the same command to resume from the last finished task")
        raise typer.Exit(130) from None
    finally:
        if cache is not None:
            cache.close()
    table = Table(title=f"stream: {spec.source}")
    for col in ("#", "task", "calls", "kept", "reward", "diversity", "dev seeds", "dev kept", "wall s"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for o in outcomes:
        u = o.utility
        table.add_row(str(o.position + 1), o.task, str(o.calls), f"{o.kept}/{o.samples}", f"{o.mean_reward:.3f}",
                      f"{o.diversity:.3f}", f"{u['seed_only']:.3f}", f"{u['scores'].get(str(u['kept']), u['seed_only']):.3f}",
                      f"{o.wall_s:.0f}")
    con.print(table)
    con.print(f"written: {out}/  (stream.json, one folder per task); experience: {spec.store_path}", highlight=False)


@app.command()
@_friendly
def prepare(
    model: Optional[str] = typer.Option(None, help="Local model: a .gguf file or a Hugging Face model folder [default: the embedded SmolLM2-135M-Instruct]."),
    cache_dir: Optional[Path] = typer.Option(None, help="Where converted models live [default: $STREAMSYNTH_CACHE_DIR or ~/.cache/streamsynth]."),
) -> None:
    """Convert a local model once (a GGUF file is dequantized, ~20 s) so that every later run loads it at once."""
    import time

    from streamsynth.backends.local_hf import LocalHFBackend, default_cache_dir

    backend = LocalHFBackend(model, cache_dir=cache_dir or default_cache_dir())
    t0 = time.perf_counter()
    backend.load()
    Console(soft_wrap=True).print(f"[green]ready[/] {backend.model_id} in {backend.model_dir()} ({time.perf_counter() - t0:.1f} s)",
                                  highlight=False)


@app.command()
@_friendly
def validate(spec: Path = typer.Argument(..., help="Task spec (YAML) to check.")) -> None:
    """Check a task spec and its data without calling any model, and show what the task will look like."""
    from streamsynth.task import load_task

    task = load_task(spec)
    s = task.data_summary
    con = Console(soft_wrap=True)
    con.print(f"[green]ok[/] [bold]{task.name}[/] ({task.kind}): {task.description}", highlight=False)
    con.print(f"  seeds from   {s['seeds_from']}: {s['seed_rows']} rows, {len(task.seeds)} chosen", highlight=False)
    con.print("  dev          " + (f"{s['dev']}: {s['dev_rows']} rows (feedback while generating)" if s["dev"] else
                                 "none (a stream's do-no-harm gate cross-validates over the seeds instead, a noisier "
                                 "judge; labeled rows that are not seeds, as data.dev, make it surer)"), highlight=False)
    con.print("  test         " + (f"{s['test']} (read only by the final evaluation)" if s["test"] else "none"), highlight=False)
    if s.get("empty_rows_skipped"):
        con.print("  skipped      rows with an empty input or output: "
                  + ", ".join(f"{n} from {k}" for k, n in s["empty_rows_skipped"].items()), highlight=False)
    if task.is_classification:
        table = Table(title="labels", title_justify="left")
        for col in ("label", "rows", "seeds", "description"):
            table.add_column(col, justify="right" if col in ("rows", "seeds") else "left")
        for lab in task.labels:
            table.add_row(lab.name, str(s["seed_label_counts"].get(lab.name, 0)), str(len(task.seeds_for(lab.name))), lab.description)
        con.print(table)
    if task.attributes:
        con.print("  attributes   " + "; ".join(f"{k}: {', '.join(v)}" for k, v in task.attributes.items()), highlight=False)
    seeds = Table(title="seeds chosen", title_justify="left")
    seeds.add_column("id")
    seeds.add_column("input", overflow="fold")
    seeds.add_column("output", overflow="fold")
    for e in task.seeds[:12]:
        text = " | ".join(e.inputs[f] for f in task.input_fields)
        seeds.add_row(e.id, text[:120] + ("..." if len(text) > 120 else ""), e.output[:60])
    con.print(seeds)
    if len(task.seeds) > 12:
        con.print(f"  ... and {len(task.seeds) - 12} more seeds", highlight=False)


@app.command()
@_friendly
def init(
    name: str = typer.Argument(..., help="Task name (letters, digits, '_', '.', '-'); the spec is written to NAME.yaml."),
    data: Path = typer.Option(..., "--from", help="Your data: .jsonl, .csv, .tsv, .parquet, or a save_to_disk folder."),
    input: list[str] = typer.Option(["text"], "--input", "-i", help="Input field; give it twice for sentence pairs."),
    label: str = typer.Option("label", "--label", "-l", help="Field with the label (or the answer, for --kind qa)."),
    kind: Optional[str] = typer.Option(None, help="classification, pair_classification or qa [default: from the data]."),
    dev: Optional[Path] = typer.Option(None, help="Optional dev data (feedback while generating)."),
    test: Optional[Path] = typer.Option(None, help="Optional test data (read only by the final evaluation)."),
    per_label: int = typer.Option(8, min=1, help="Seeds per label (or in all, for qa)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write the spec [default: ./NAME.yaml]."),
    force: bool = typer.Option(False, help="Replace an existing spec file."),
) -> None:
    """Write a commented starter spec for your own data, with the label set filled from it."""
    from streamsynth.errors import ConfigError
    from streamsynth.task.starter import starter_spec

    spec_path = out or Path(f"{name}.yaml")
    if spec_path.exists() and not force:
        raise ConfigError(f"{spec_path} already exists; pick another --out, or pass --force to replace it")
    starter = starter_spec(name, data, spec_path=spec_path, inputs=list(input), label=label, kind=kind,
                           dev=dev, test=test, per_label=per_label)
    from streamsynth.output.writer import write_text_atomic

    spec_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(spec_path, starter.text)  # never a half-written spec
    labels = ", ".join(f"{k} ({v})" for k, v in starter.label_counts.items())
    Console().print(
        f"[green]wrote[/] {spec_path}: {starter.rows} rows" + (f", labels {labels}" if labels else "")
        + f"\nnext: streamsynth validate {spec_path}   then   streamsynth generate {spec_path}",
        highlight=False, soft_wrap=True,
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # a Ctrl-C before a command's own handler is in place (e.g. while it imports)
        err.print("[yellow]interrupted[/]", highlight=False)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
