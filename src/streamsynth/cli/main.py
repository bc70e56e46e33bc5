"""``streamsynth``: generate training data with LLMs.

Every user mistake ends in one line that says what is wrong and what to do (exit code 2), never
in a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import os
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from streamsynth.errors import StreamsynthError

app = typer.Typer(
    name="streamsynth",
    help="Generate fine-tuning and training data with LLMs: plan, generate, check, select, write with provenance.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


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

    return wrapper


def _make_backend(kind: BackendKind, *, model, base_url, api_key_env, concurrency, timeout, batch_size, cache_dir):
    from streamsynth.errors import ConfigError

    if kind is BackendKind.local:
        from streamsynth.backends.local_hf import LocalHFBackend

        return LocalHFBackend(model, cache_dir=cache_dir, batch_size=batch_size)
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
    batch_size: int = typer.Option(32, min=1, help="local: requests per generate() batch."),
    seed: int = typer.Option(0, help="Seed for sampling and every random choice; the same config and seed give the same data set."),
    target: Optional[int] = typer.Option(None, min=1, help="Stop once this many samples are accepted."),
    max_tokens: Optional[int] = typer.Option(None, min=1, help="Hard cap on tokens (prompt + completion)."),
    max_dollars: Optional[float] = typer.Option(None, min=0, help="Hard cap on dollars spent (needs prices)."),
    price_prompt: float = typer.Option(0.0, min=0, help="Dollars per million prompt tokens."),
    price_completion: float = typer.Option(0.0, min=0, help="Dollars per million completion tokens."),
    cache_dir: Optional[Path] = typer.Option(None, help="Response cache and converted models [default: $STREAMSYNTH_CACHE_DIR or ~/.cache/streamsynth]."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the response cache."),
    overwrite: bool = typer.Option(False, help="Replace an output folder that holds a different run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Generate a labeled synthetic data set for the task in SPEC."""
    from streamsynth.api import agenerate
    from streamsynth.backends.local_hf import default_cache_dir
    from streamsynth.cli.progress import LiveProgress
    from streamsynth.errors import ConfigError
    from streamsynth.runtime import Prices, ResponseCache
    from streamsynth.task import load_task

    task = load_task(spec)
    if max_dollars is not None and not (price_prompt or price_completion):
        raise ConfigError("--max-dollars needs --price-prompt and/or --price-completion to count dollars")
    cache_root = cache_dir or default_cache_dir()
    be = _make_backend(
        backend, model=model, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency,
        timeout=timeout, batch_size=batch_size, cache_dir=cache_root,
    )
    cache = None if no_cache else ResponseCache(cache_root / "responses.sqlite")
    out_dir = out or Path("runs") / task.name
    progress = LiveProgress(task.name, budget, console=err, enabled=not quiet)
    config = {"backend": backend.value, "spec": str(spec), "cache": not no_cache}

    async def _run():
        try:
            with progress:
                return await agenerate(
                    task, be, budget=budget, out=out_dir, seed=seed, cache=cache, target=target,
                    max_tokens=max_tokens, max_dollars=max_dollars,
                    prices=Prices(price_prompt, price_completion), overwrite=overwrite,
                    on_progress=progress.update, config=config,
                )
        finally:
            await be.aclose()

    try:
        report = asyncio.run(_run())
    except KeyboardInterrupt:  # interrupted before the run loop could stop cleanly
        err.print("[yellow]interrupted[/]: rerun the same command to continue from the cache")
        raise typer.Exit(130) from None
    finally:
        if cache is not None:
            cache.close()
    _summary(report)
    if report.result.stopped_reason == "interrupted":
        err.print(f"[yellow]interrupted[/]: the samples made so far are in {out_dir}; rerun to continue from the cache")
        raise typer.Exit(130)


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
def validate(spec: Path = typer.Argument(..., help="Task spec (YAML) to check.")) -> None:
    """Check a task spec and its data without calling any model."""
    from streamsynth.task import load_task

    task = load_task(spec)
    labels = ", ".join(f"{lab}: {len(task.seeds_for(lab))}" for lab in task.label_names) or "-"
    Console().print(
        f"[green]ok[/] {task.name} ({task.kind}): {len(task.seeds)} seeds ({labels}), "
        f"{len(task.dev)} dev rows, test split {'set' if task.test_path else 'not set'}"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
