"""Where a task's rows come from: JSONL, CSV/TSV, Parquet, or a Hugging Face dataset.

A spec names a source either as a path (the format follows from the file's ending, a folder is a
dataset written by ``save_to_disk``) or as a mapping: ``{path: ..., format: csv}`` or
``{hf: NAME, config: ..., split: ...}`` for a dataset loaded with ``datasets.load_dataset``
(offline, from the local Hugging Face cache, when ``HF_HUB_OFFLINE=1``).

``read_rows`` returns plain dicts, one per row, in the source's order. Every failure is a
``DataError`` that names the file or dataset and says what to do.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from streamsynth.errors import DataError

Format = Literal["jsonl", "json", "csv", "tsv", "parquet", "hf_disk", "hf"]
FILE_FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "hf_disk")
_SUFFIXES = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
    ".parquet": "parquet", ".pq": "parquet",
}


@dataclass(frozen=True, slots=True)
class DataSource:
    """A resolved reference to rows; holds no rows itself (so a Task can name its test split safely)."""

    format: Format
    location: str  # an absolute path, or a dataset name for format "hf"
    config: str | None = None
    split: str | None = None

    def __str__(self) -> str:
        if self.format == "hf":
            extra = ", ".join(f"{k} {v}" for k, v in (("config", self.config), ("split", self.split)) if v)
            return f"dataset {self.location!r}" + (f" ({extra})" if extra else "")
        if self.format == "hf_disk" and self.split:
            return f"{self.location} (split {self.split})"
        return self.location

    @property
    def path(self) -> Path | None:
        return None if self.format == "hf" else Path(self.location)

    def same_as(self, other: "DataSource") -> bool:
        """True when both name the same rows (same file on disk, or same dataset, config and split)."""
        if self.format == "hf" or other.format == "hf":
            return self == other
        a, b = Path(self.location), Path(other.location)
        try:
            same = a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
        except OSError:
            return False
        return same and self.split == other.split


def guess_format(path: Path) -> str:
    """The format a path's ending (or being a folder) implies; a ``DataError`` when there is none."""
    if path.is_dir():
        return "hf_disk"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the data format from the ending {path.suffix or '(none)'!r}; "
            f"use .jsonl, .csv, .tsv or .parquet, a folder written by datasets' save_to_disk, "
            f"or say it in the spec, e.g. {{path: {path.name}, format: csv}}"
        )
    return fmt


def make_source(path: Path | None = None, *, fmt: str | None = None, hf: str | None = None,
                config: str | None = None, split: str | None = None, what: str = "data") -> DataSource:
    """A ``DataSource`` for a path (format from its ending unless given) or a hub dataset.

    ``what`` (e.g. 'data.train') starts the error message when the path does not exist.
    """
    if hf is not None:
        return DataSource("hf", hf, config, split)
    assert path is not None
    path = Path(os.path.normpath(os.path.abspath(path)))
    if not path.exists():
        raise DataError(f"{what}: no such file {path}; check the path (relative paths in a spec start at the spec's folder)")
    return DataSource(fmt or guess_format(path), str(path), None, split)  # type: ignore[arg-type]


def read_rows(source: DataSource, *, what: str) -> list[dict[str, Any]]:
    """Read every row of ``source`` as a dict. ``what`` (e.g. 'data.dev') starts each error message."""
    readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "tsv": _read_csv,
               "parquet": _read_parquet, "hf_disk": _read_hf_disk, "hf": _read_hf_hub}
    rows = readers[source.format](source, what)
    if not rows:
        raise DataError(f"{what}: {source} has no rows; point the spec at data with rows")
    return rows


def _open_path(source: DataSource, what: str) -> Path:
    p = Path(source.location)
    if not p.exists():
        raise DataError(f"{what}: no such file {p}; check the path in the spec (relative paths start at the spec's folder)")
    return p


def _read_jsonl(source: DataSource, what: str) -> list[dict[str, Any]]:
    path = _open_path(source, what)
    rows: list[dict[str, Any]] = []
    n = 0
    try:
        with path.open(encoding="utf-8-sig") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{n}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{n}: expected a JSON object per line, got {type(row).__name__}")
                rows.append(row)
    except UnicodeDecodeError:
        raise DataError(f"{path}:{n + 1}: not valid UTF-8; data files must be UTF-8 text") from None
    except IsADirectoryError:
        raise DataError(f"{what}: {path} is a folder, not a JSONL file; point the spec at the file") from None
    return rows


def _read_json(source: DataSource, what: str) -> list[dict[str, Any]]:
    """A .json file: one JSON array of objects, or JSON Lines under a .json name."""
    path = _open_path(source, what)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8; data files must be UTF-8 text") from None
    if not text.lstrip().startswith("["):
        return _read_jsonl(source, what)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); fix the file or use JSON Lines") from None
    bad = next((i for i, r in enumerate(data) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f"{path}: item {bad + 1} of the array is a {type(data[bad]).__name__}, not an object; each row must be a JSON object")
    return data


def _read_csv(source: DataSource, what: str) -> list[dict[str, Any]]:
    """CSV or TSV with a header line; every value is read as text."""
    path = _open_path(source, what)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long texts (code, articles) are fine
    delimiter = "\t" if source.format == "tsv" else ","
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            if not reader.fieldnames:
                return []
            rows = []
            for i, row in enumerate(reader, 1):
                if None in row:  # more values than header columns
                    raise DataError(
                        f"{path}: row {i} (line {reader.line_num}) has more values than the header has columns "
                        f"({len(reader.fieldnames)}); quote values that contain '{delimiter}'"
                    )
                rows.append({k: ("" if v is None else v) for k, v in row.items()})
            return rows
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8; save the file as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not valid {source.format.upper()} ({exc}); fix the file") from None


def _read_parquet(source: DataSource, what: str) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _open_path(source, what)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)}); check the file") from None
    return table.to_pylist()


def _dataset_rows(ds: Any) -> list[dict[str, Any]]:
    """A ``datasets.Dataset`` as dicts, with class-label integers turned into their names."""
    from datasets import ClassLabel

    names = {col: feat for col, feat in ds.features.items() if isinstance(feat, ClassLabel)}
    rows = ds.to_list()
    for row in rows:
        for col, feat in names.items():
            v = row.get(col)
            if isinstance(v, int) and 0 <= v < feat.num_classes:
                row[col] = feat.int2str(v)
    return rows


def _pick_split(obj: Any, source: DataSource, what: str) -> Any:
    from datasets import DatasetDict

    if not isinstance(obj, DatasetDict):
        return obj
    splits = sorted(obj)
    if source.split is None:
        if len(splits) == 1:
            return obj[splits[0]]
        raise DataError(f"{what}: {source} holds the splits {splits}; say which one, e.g. {{path: ..., split: {splits[0]}}}")
    if source.split not in obj:
        raise DataError(f"{what}: {source} has no split {source.split!r}; it has {splits}")
    return obj[source.split]


def _read_hf_disk(source: DataSource, what: str) -> list[dict[str, Any]]:
    path = _open_path(source, what)
    try:
        from datasets import load_from_disk
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise DataError(f"{what}: reading {path} needs the 'datasets' package; pip install datasets") from None
    try:
        obj = load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(
            f"{what}: {path} is not a folder written by datasets' save_to_disk ({_first_line(exc)}); "
            f"point the spec at such a folder or at a .jsonl, .csv or .parquet file"
        ) from None
    return _dataset_rows(_pick_split(obj, source, what))


def _read_hf_hub(source: DataSource, what: str) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise DataError(f"{what}: reading {source} needs the 'datasets' package; pip install datasets") from None
    try:
        with _quiet_datasets(datasets):
            obj = datasets.load_dataset(source.location, source.config, split=source.split)
    except Exception as exc:  # the library raises many kinds (connection, not found, bad split, bad config)
        raise DataError(
            f"{what}: could not load {source}: {type(exc).__name__}: {_first_line(exc)}. Offline (HF_HUB_OFFLINE=1) "
            f"the dataset must already be in the local Hugging Face cache; or save it once with "
            f"save_to_disk and point the spec at that folder"
        ) from None
    return _dataset_rows(_pick_split(obj, source, what))


class _quiet_datasets:
    """Silence datasets' progress bars while loading (they would garble the CLI's display)."""

    def __init__(self, datasets_mod: Any):
        self._mod = datasets_mod
        self._was = None

    def __enter__(self):
        u = self._mod.utils
        self._was = u.is_progress_bar_enabled()
        u.disable_progress_bars()
        return self

    def __exit__(self, *exc):
        if self._was:
            self._mod.utils.enable_progress_bars()
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return io.StringIO(text).readline().strip()
