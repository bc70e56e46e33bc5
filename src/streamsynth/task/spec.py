"""The task spec: a YAML file that points at JSONL data.

``TaskSpec`` validates the YAML (pydantic); ``load_task`` reads the data it points at and returns
an immutable ``Task``. Every problem becomes a ``SpecError`` that names the field and the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamsynth.errors import SpecError

if TYPE_CHECKING:
    from streamsynth.task.sources import DataSource

TaskKind = Literal["classification", "pair_classification", "qa", "code"]
KINDS = ("classification", "pair_classification", "qa", "code")


class _FieldError(ValueError):
    """A cross-field check that failed; ``field`` (dotted, relative to the model) is the one to fix."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _label_name(x: Any) -> str:
    # Same text as the data side (task._to_text): YAML `true` -> "true", 1 -> "1", 0.5 -> "0.5".
    return x if isinstance(x, str) else json.dumps(x)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataRef(_Strict):
    """A data source written as a mapping: a file or folder with an explicit format, or a hub dataset."""

    path: str | None = Field(None, description="a file (.jsonl, .csv, .tsv, .parquet) or a save_to_disk folder")
    format: Literal["jsonl", "json", "csv", "tsv", "parquet", "hf_disk"] | None = Field(
        None, description="the file's format when its ending does not say it"
    )
    hf: str | None = Field(None, description="a Hugging Face dataset name, loaded with datasets.load_dataset")
    config: str | None = Field(None, description="hf: the dataset's configuration (subset) name")
    split: str | None = Field(None, description="hf: the split to read; save_to_disk folders: which split of a DatasetDict")

    @model_validator(mode="after")
    def _one_of(self) -> "DataRef":
        if (self.path is None) == (self.hf is None):
            raise ValueError("give either 'path' (a file or folder) or 'hf' (a dataset name), not both or neither")
        if self.hf is not None and self.format is not None:
            raise _FieldError("format", "'format' is for files; an 'hf' dataset has none")
        if self.hf is not None and self.split is None:
            raise _FieldError("split", f"an 'hf' dataset needs 'split', e.g. {{hf: {self.hf}, split: train}}")
        if self.hf is None and self.config is not None:
            raise _FieldError("config", "'config' is for 'hf' datasets (a file has none); drop it or use 'hf'")
        return self


DataValue = str | DataRef


def _data_value(v: Any) -> Any:
    """Validate a data value here, so an error names the spec's field rather than a union member."""
    if v is None or isinstance(v, (str, DataRef)):
        return v
    if isinstance(v, dict):
        try:
            return DataRef.model_validate(v)
        except ValidationError as exc:
            e = exc.errors()[0]
            cause = (e.get("ctx") or {}).get("error")
            where = ".".join(str(p) for p in e["loc"]) or (cause.field if isinstance(cause, _FieldError) else "")
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown key; a data mapping takes path, format, hf, config and split"
            raise ValueError(f"{where + ': ' if where else ''}{msg}") from None
    raise ValueError(
        f"must be a path (e.g. data/train.csv) or a mapping such as {{hf: NAME, split: train}} "
        f"or {{path: FILE, format: csv}}; got {v!r}"
    )


class DataSpec(_Strict):
    train: DataValue | None = Field(None, description="real examples (any supported format); seeds come from here")
    dev: DataValue | None = Field(None, description="optional data for feedback while synthesizing")
    test: DataValue | None = Field(None, description="optional data used only by the final evaluation")

    _check = field_validator("train", "dev", "test", mode="before")(lambda cls, v: _data_value(v))


class FieldsSpec(_Strict):
    input: str | list[str] = Field(..., description="input field name, or a list for pair tasks")
    output: str = Field(..., description="field with the label or reference answer")
    tests: str | None = Field(None, description="code tasks: field with the test code or list of asserts")
    entry_point: str | None = Field(None, description="code tasks: field naming the function under test")

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, v: Any) -> Any:
        # Checked here so an error names 'fields.input', not a union member ('fields.input.str').
        if isinstance(v, str):
            return v
        if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            return v
        if isinstance(v, list) and not v:
            raise ValueError("the list of input fields is empty; name at least one field")
        raise ValueError(f"must be a field name or a list of field names, e.g. text or [premise, hypothesis]; got {v!r}")

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.input,) if isinstance(self.input, str) else tuple(self.input)


class LabelSpec(_Strict):
    name: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a label name cannot be empty")
        return v


class SeedsSpec(_Strict):
    source: DataValue = Field("train", alias="from", description="a split name (train, dev), a path, or a data mapping")
    per_label: int | None = Field(None, ge=1, description="k seeds per label (classification)")
    n: int | None = Field(None, ge=1, description="n seeds in all")
    seed: int = Field(0, description="random seed for choosing seeds")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    _check = field_validator("source", mode="before")(lambda cls, v: _data_value(v))

    @model_validator(mode="after")
    def _one_of(self) -> "SeedsSpec":
        if self.per_label is not None and self.n is not None:
            raise _FieldError("per_label", "give either 'per_label' or 'n', not both")
        return self


class GenerationSpec(_Strict):
    """Knobs of the default synthesis program."""

    examples_in_prompt: int = Field(1, ge=0, le=16)
    temperature: float = Field(0.9, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(80, ge=8, le=4096)
    min_chars: int = Field(12, ge=1)
    max_chars: int = Field(600, ge=10)
    propose_attributes: bool = Field(True, description="ask the model for attributes when none are given")
    label_check: bool | None = Field(
        None, description="reject samples nearer another label's seeds; default: on for classification, off otherwise"
    )
    p_true: bool = Field(
        False, description="ask the synthesizer whether each sample carries its label (P(True)); one more call a sample"
    )
    max_label_ratio: float = Field(
        1.5, ge=0, allow_inf_nan=False, description="classification: keep no label more than this many times as often as the rarest, "
        "counting its seeds (the best-scored samples of each label stay); 0 keeps every sample"
    )
    input_noun: str = Field("text", description="what one input is called in prompts, e.g. 'movie review sentence'")

    @model_validator(mode="after")
    def _range(self) -> "GenerationSpec":
        if self.min_chars >= self.max_chars:
            raise _FieldError("min_chars", "'min_chars' must be smaller than 'max_chars'")
        if 0 < self.max_label_ratio < 1:
            raise _FieldError("max_label_ratio", "'max_label_ratio' must be 0 (keep every sample) or at least 1")
        return self


class TaskSpec(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    description: str
    kind: TaskKind
    data: DataSpec
    fields: FieldsSpec
    labels: list[LabelSpec] | None = None
    answer_format: str | None = None
    seeds: SeedsSpec = SeedsSpec()
    attributes: dict[str, list[str]] | None = None
    generation: GenerationSpec = GenerationSpec()

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": _label_name(x)} if isinstance(x, (str, int, float)) else x for x in v]
        if isinstance(v, dict):  # {name: description}
            return [{"name": _label_name(k), "description": str(d or "")} for k, d in v.items()]
        return v

    @field_validator("attributes")
    @classmethod
    def _attrs(cls, v: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if v is not None:
            for k, vals in v.items():
                if not vals:
                    raise ValueError(f"attribute '{k}' has no values; list at least one or remove it")
        return v

    @model_validator(mode="after")
    def _by_kind(self) -> "TaskSpec":
        if self.kind in ("classification", "pair_classification"):
            if not self.labels or len(self.labels) < 2:
                raise _FieldError(
                    "labels",
                    f"a {self.kind} task needs 'labels' with at least two entries, e.g. labels: [negative, positive]",
                )
            names = [lab.name for lab in self.labels]
            if len(set(names)) != len(names):
                raise _FieldError("labels", f"'labels' has duplicates: {names}")
        if self.kind == "pair_classification" and len(self.fields.inputs) != 2:
            raise _FieldError(
                "fields.input", "a pair_classification task needs 'fields.input' to list two fields, e.g. [premise, hypothesis]"
            )
        if self.kind == "code" and not self.fields.tests:
            raise _FieldError("fields.tests", "a code task needs 'fields.tests' naming the field with its tests")
        if self.seeds.per_label is not None and self.kind not in ("classification", "pair_classification"):
            raise _FieldError("seeds.per_label", "'seeds.per_label' only applies to classification tasks; use 'seeds.n'")
        if self.data.train is None and self.seeds.source == "train":
            raise _FieldError("data.train", "'data.train' is required when seeds come from 'train' (the default)")
        return self


_FIXES = {
    "missing": "add it",
    "extra_forbidden": "remove it or check its spelling",
    "literal_error": "use one of the allowed values",
    "string_pattern_mismatch": "use letters, digits, '_', '.' or '-' only",
}


def parse_spec(raw: Any, *, path: str | None = None) -> TaskSpec:
    """Validate a spec given as a mapping; raise ``SpecError`` naming the first bad field."""
    if not isinstance(raw, dict):
        raise SpecError("a task spec must be a YAML mapping of fields (name, description, kind, data, ...)", path=path)
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        parts = [str(p) for p in err["loc"]]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _FieldError):  # a cross-field check: name the field it is about
            parts.append(cause.field)
        loc = ".".join(parts) or None
        msg = err["msg"].removeprefix("Value error, ")
        fix = _FIXES.get(err["type"])
        if err["type"] == "missing":
            msg = "is required"
        if err["type"] == "literal_error" and loc == "kind":
            msg = f"must be one of {', '.join(KINDS)}; got {err.get('input')!r}"
        text = f"{msg}" + (f" ({fix})" if fix and err["type"] != "literal_error" else "")
        raise SpecError(text, field=loc, path=path) from None


def read_spec(path: str | os.PathLike) -> TaskSpec:
    """Read and validate a YAML task spec file."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"no such file; check the path (looked in {p.resolve().parent})", path=str(p))
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"is not valid YAML{where}: {getattr(exc, 'problem', exc)}; fix the syntax", path=str(p)) from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"is not UTF-8 text (byte {exc.start}); save it as UTF-8 (some editors and shells write "
                        "UTF-16 by default)", path=str(p)) from None
    return parse_spec(raw, path=str(p))


def resolve_source(value: "DataValue", base: Path, *, what: str = "data") -> "DataSource":
    """A spec's data value as a ``DataSource``: paths resolved against ``base`` (the spec's folder).

    ``what`` names the spec key (e.g. 'data.train') in the error when a path does not exist.
    """
    from streamsynth.task.sources import make_source

    if isinstance(value, str):
        return make_source(resolve_path(value, base), what=what)
    if value.hf is not None:
        return make_source(hf=value.hf, config=value.config, split=value.split)
    assert value.path is not None
    return make_source(resolve_path(value.path, base), fmt=value.format, split=value.split, what=what)


def resolve_path(value: str, base: Path) -> Path:
    """Expand ~ and $VARS; relative paths are relative to the spec file's folder."""
    expanded = os.path.expandvars(os.path.expanduser(value))
    p = Path(expanded)
    return p if p.is_absolute() else (base / p)
