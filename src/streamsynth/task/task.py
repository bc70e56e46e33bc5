"""The immutable ``Task`` and ``load_task``, which reads a spec and the data it points at."""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from streamsynth.errors import DataError, SpecError
from streamsynth.fingerprint import fingerprint
from streamsynth.records import Example
from streamsynth.task.spec import GenerationSpec, TaskSpec, read_spec, resolve_path


@dataclass(frozen=True, slots=True)
class Label:
    name: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Task:
    """A synthesis task: what to write, from which seeds. Never holds the test split's rows."""

    name: str
    description: str
    kind: str
    input_fields: tuple[str, ...]
    output_field: str
    labels: tuple[Label, ...]
    seeds: tuple[Example, ...]
    dev: tuple[Example, ...] = ()
    test_path: str | None = None
    answer_format: str | None = None
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    generation: GenerationSpec = GenerationSpec()
    tests_field: str | None = None
    entry_point_field: str | None = None
    fingerprint: str = ""

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(lab.name for lab in self.labels)

    @property
    def is_classification(self) -> bool:
        return self.kind in ("classification", "pair_classification")

    def seeds_for(self, label: str) -> tuple[Example, ...]:
        return tuple(e for e in self.seeds if e.output == label)


def read_jsonl(path: Path, *, what: str) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line gives an error with its number."""
    if not path.is_file():
        raise DataError(f"{what}: no such file {path}; check the path in the spec (relative paths start at the spec's folder)")
    rows: list[dict[str, Any]] = []
    n = 0
    try:
        with path.open(encoding="utf-8") as fh:
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
        raise DataError(f"{path}:{n + 1}: not valid UTF-8; JSONL files must be UTF-8 text") from None
    if not rows:
        raise DataError(f"{what}: {path} has no rows; point the spec at a JSONL file with data")
    return rows


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def rows_to_examples(rows: list[dict[str, Any]], spec: TaskSpec, *, split: str, path: Path) -> list[Example]:
    inputs = spec.fields.inputs
    needed = list(inputs) + [spec.fields.output]
    if spec.kind == "code" and spec.fields.tests:
        needed.append(spec.fields.tests)
    label_set = {lab.name for lab in spec.labels or []}
    out = []
    for i, row in enumerate(rows):
        missing = [f for f in needed if f not in row]
        if missing:
            raise DataError(
                f"{path}: row {i + 1} has no field {missing[0]!r} (it has {sorted(row)}); "
                f"fix 'fields' in the spec"
            )
        output = _to_text(row[spec.fields.output])
        if label_set and output not in label_set:
            raise DataError(
                f"{path}: row {i + 1} has label {output!r}, which is not in the spec's labels "
                f"{sorted(label_set)}; add it to 'labels' or fix the data"
            )
        ins = {f: _to_text(row[f]) for f in inputs}
        if spec.kind == "code":
            ins[spec.fields.tests] = _to_text(row[spec.fields.tests])
            if spec.fields.entry_point and spec.fields.entry_point in row:
                ins[spec.fields.entry_point] = _to_text(row[spec.fields.entry_point])
        out.append(Example(id=f"{split}:{i}", inputs=ins, output=output))
    return out


def choose_seeds(examples: list[Example], spec: TaskSpec) -> list[Example]:
    """Deterministic choice: shuffle with the seeds' random seed, then take k per label or n."""
    rng = random.Random(spec.seeds.seed)
    order = list(examples)
    rng.shuffle(order)
    if spec.seeds.per_label is not None:
        by_label: dict[str, list[Example]] = defaultdict(list)
        for e in order:
            if len(by_label[e.output]) < spec.seeds.per_label:
                by_label[e.output].append(e)
        for lab in spec.labels or []:
            if not by_label.get(lab.name):
                raise DataError(
                    f"no seed example has label {lab.name!r}; add examples with that label to the seed source or remove the label"
                )
        return [e for lab in spec.labels or [] for e in by_label[lab.name]]
    n = spec.seeds.n or (8 if spec.kind not in ("classification", "pair_classification") else len(order))
    return order[:n]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def load_task(path: str | os.PathLike) -> Task:
    """Read a task spec and its seed and dev data into a ``Task``."""
    spec_path = Path(path)
    spec = read_spec(spec_path)
    return task_from_spec(spec, base=spec_path.resolve().parent, source=str(spec_path))


def task_from_spec(spec: TaskSpec, *, base: Path, source: str = "<spec>") -> Task:
    splits = {k: v for k, v in spec.data.model_dump().items() if v is not None}
    src = spec.seeds.source
    if src in ("train", "dev"):
        if src not in splits:
            raise SpecError(f"seeds come from '{src}' but 'data.{src}' is not set; set it or change 'seeds.from'", field="seeds.from", path=source)
        seed_path, seed_split = resolve_path(splits[src], base), src
    elif src == "test":
        raise SpecError("seeds may never come from the test split; use 'train' or 'dev'", field="seeds.from", path=source)
    else:
        seed_path, seed_split = resolve_path(src, base), "seeds"
        if "test" in splits and _same_file(seed_path, resolve_path(splits["test"], base)):
            raise SpecError(
                "seeds may never come from the test split, and this path is the file 'data.test' names; "
                "use 'train', 'dev' or another file",
                field="seeds.from",
                path=source,
            )
    seed_examples = rows_to_examples(read_jsonl(seed_path, what="seeds"), spec, split=seed_split, path=seed_path)
    seeds = choose_seeds(seed_examples, spec)
    dev: list[Example] = []
    if "dev" in splits:
        dev_path = resolve_path(splits["dev"], base)
        dev = rows_to_examples(read_jsonl(dev_path, what="data.dev"), spec, split="dev", path=dev_path)
    test_path = None
    if "test" in splits:
        tp = resolve_path(splits["test"], base)
        if not tp.is_file():
            raise DataError(f"data.test: no such file {tp}; fix the path or remove 'data.test'")
        test_path = str(tp)
    labels = tuple(Label(lab.name, lab.description) for lab in spec.labels or [])
    attrs = {k: tuple(v) for k, v in (spec.attributes or {}).items()}
    fp = fingerprint(
        {"spec": spec.model_dump(mode="json", by_alias=True), "seeds": [e.to_dict() for e in seeds]}
    )
    return Task(
        name=spec.name,
        description=spec.description.strip(),
        kind=spec.kind,
        input_fields=spec.fields.inputs,
        output_field=spec.fields.output,
        labels=labels,
        seeds=tuple(seeds),
        dev=tuple(dev),
        test_path=test_path,
        answer_format=spec.answer_format,
        attributes=attrs,
        generation=spec.generation,
        tests_field=spec.fields.tests,
        entry_point_field=spec.fields.entry_point,
        fingerprint=fp,
    )
