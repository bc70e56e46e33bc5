"""Writing a run: accepted samples (JSONL and Parquet), rejected samples, and a manifest.

Files are written to temporary names and moved into place, so a crash never leaves a half
file where a good one stood. An output folder that holds a different run is never overwritten
unless the caller says so.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from streamsynth.errors import OutputError
from streamsynth.fingerprint import to_json
from streamsynth.records import Sample
from streamsynth.runtime.gcpolicy import throughput_gc
from streamsynth.runtime.runner import RunResult

SAMPLES_JSONL = "samples.jsonl"
SAMPLES_PARQUET = "samples.parquet"
REJECTED_JSONL = "rejected.jsonl"
MANIFEST = "manifest.json"


def training_row(sample: Sample, output_field: str) -> dict[str, Any]:
    """A sample as a training row: the task's own field names, then id and provenance."""
    row: dict[str, Any] = dict(sample.inputs)
    row[output_field] = sample.output
    row["id"] = sample.id
    row["meta"] = {
        "provenance": sample.provenance.to_dict(),
        "scores": dict(sample.scores),
        "cost": sample.cost.to_dict(),
    }
    return row


def _training_row_json(sample: Sample, output_field: str, provenance_json: str) -> str:
    """``json.dumps(training_row(sample, output_field), ensure_ascii=False)``, with the provenance
    already encoded (the Parquet file holds the same text, so it is encoded once for both)."""
    head: dict[str, Any] = dict(sample.inputs)
    head[output_field] = sample.output
    head["id"] = sample.id
    if "meta" in head:  # an input field named "meta": training_row overwrites it in place
        return to_json(training_row(sample, output_field))
    # a dict's JSON is its items joined by ", ": the row is the head's items, then "meta"
    return (f'{to_json(head)[:-1]}, "meta": {{"provenance": {provenance_json}, '
            f'"scores": {to_json(dict(sample.scores))}, "cost": {to_json(sample.cost.to_dict())}}}}}')


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file so that a reader sees the old file or the new one, never half."""
    _atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def _jsonl_bytes(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(to_json(r) + "\n" for r in rows).encode("utf-8")


def _write_parquet(path: Path, samples: list[Sample], output_field: str, input_fields: tuple[str, ...],
                   provenance_json: list[str] | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if provenance_json is None:
        provenance_json = [to_json(s.provenance.to_dict()) for s in samples]

    cols: dict[str, list[Any]] = {f: [s.inputs.get(f, "") for s in samples] for f in input_fields}
    cols[output_field] = [s.output for s in samples]
    cols["id"] = [s.id for s in samples]
    cols["strategy"] = [s.provenance.strategy for s in samples]
    cols["pattern"] = [s.provenance.pattern for s in samples]
    cols["model"] = [s.provenance.model for s in samples]
    cols["seed"] = [s.provenance.seed for s in samples]
    cols["sample_index"] = [s.provenance.sample_index for s in samples]
    cols["prompt_fingerprint"] = [s.provenance.prompt_fingerprint for s in samples]
    cols["seed_example_ids"] = [list(s.provenance.seed_example_ids) for s in samples]
    cols["provenance_json"] = provenance_json
    cols["scores_json"] = [json.dumps(dict(s.scores)) for s in samples]
    schema_types = {"seed": pa.int64(), "sample_index": pa.int64(), "seed_example_ids": pa.list_(pa.string())}
    table = pa.table({k: pa.array(v, type=schema_types.get(k, pa.string())) for k, v in cols.items()})
    _atomic_write(path, lambda fh: pq.write_table(table, fh))


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("streamsynth", "torch", "transformers", "aiohttp", "pyarrow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def check_output_dir(out_dir: Path, run_fingerprint: str, *, overwrite: bool) -> None:
    """Refuse to mix two different runs in one folder."""
    manifest = out_dir / MANIFEST
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} is a file; give a folder path")
    journal = out_dir / "journal.jsonl"
    if overwrite:
        journal.unlink(missing_ok=True)  # start over: the old run's journal must not be resumed
    if journal.is_file() and not manifest.is_file():
        return  # an unfinished run: the journal itself checks that it is the same run
    if not manifest.is_file() or overwrite:
        if out_dir.is_dir() and not manifest.is_file() and any(out_dir.iterdir()) and not overwrite:
            raise OutputError(
                f"--out {out_dir} already holds files that are not a streamsynth run; "
                "choose an empty or new folder, or pass --overwrite"
            )
        return
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8")).get("run_fingerprint")
    except (OSError, ValueError):
        previous = None
    if previous != run_fingerprint:
        raise OutputError(
            f"--out {out_dir} holds a run with a different task, config or seed; "
            "choose another folder, or pass --overwrite to replace it"
        )


def write_run(out_dir: Path, result: RunResult, manifest: dict[str, Any]) -> dict[str, str]:
    """Write samples, rejects and manifest into ``out_dir``; returns the file paths."""
    with throughput_gc():  # a large run makes many small objects here too
        return _write_run(out_dir, result, manifest)


def _write_run(out_dir: Path, result: RunResult, manifest: dict[str, Any]) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    task = result.task
    files = {
        "samples_jsonl": out_dir / SAMPLES_JSONL,
        "samples_parquet": out_dir / SAMPLES_PARQUET,
        "rejected_jsonl": out_dir / REJECTED_JSONL,
        "manifest": out_dir / MANIFEST,
    }
    provenance = [to_json(s.provenance.to_dict()) for s in result.accepted]
    rows = "".join(_training_row_json(s, task.output_field, p) + "\n" for s, p in zip(result.accepted, provenance))
    _atomic_write(files["samples_jsonl"], lambda fh: fh.write(rows.encode("utf-8")))
    _write_parquet(files["samples_parquet"], result.accepted, task.output_field, task.input_fields, provenance)
    _atomic_write(files["rejected_jsonl"], lambda fh: fh.write(_jsonl_bytes(s.to_dict() for s in result.rejected)))
    full = dict(manifest)
    full["files"] = {k: p.name for k, p in files.items()}
    _atomic_write(files["manifest"], lambda fh: fh.write(json.dumps(full, indent=2, ensure_ascii=False).encode()))
    return {k: str(p) for k, p in files.items()}


def build_manifest(result: RunResult, *, config: dict[str, Any], run_fingerprint: str, seed: int) -> dict[str, Any]:
    st = result.stats
    by_label: dict[str, int] = {}
    for s in result.accepted:
        by_label[s.output] = by_label.get(s.output, 0) + 1
    return {
        "streamsynth_manifest": 1,
        "task": result.task.name,
        "task_fingerprint": result.task.fingerprint,
        "run_fingerprint": run_fingerprint,
        "seed": seed,
        "config": config,
        "program": result.program_state,
        "versions": versions(),
        "stopped_reason": result.stopped_reason,
        "counts": {
            "accepted": len(result.accepted),
            "rejected": len(result.rejected),
            "accepted_by_label": by_label,
            "rejected_by_reason": result.rejected_by_reason(),
            "seeds": len(result.task.seeds),
        },
        "usage": {
            "queries": st.queries,
            # queries that produced no sample: one-time setup such as proposing attributes
            "setup_queries": result.setup_queries,
            "calls": st.calls,
            "cached_calls": st.cached_calls,
            "tokens": st.tokens,
            "completion_tokens": st.completion_tokens,
            "wall_s": round(result.wall_s, 3),
            "generated_tokens": st.generated_tokens,
            "generated_tokens_per_s": round(st.generated_tokens / result.wall_s, 2) if result.wall_s and st.calls else None,
        },
    }
