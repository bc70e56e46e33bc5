"""The immutable ``Task`` and ``load_task``, which reads a spec and the data it points at."""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from streamsynth.errors import DataError, SpecError
from streamsynth.fingerprint import fingerprint
from streamsynth.records import Example
from streamsynth.task.sources import DataSource, read_rows
from streamsynth.task.spec import GenerationSpec, TaskSpec, read_spec, resolve_source


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
    test_source: DataSource | None = None  # a reference only; Task never holds test rows
    answer_format: str | None = None
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    generation: GenerationSpec = GenerationSpec()
    tests_field: str | None = None
    entry_point_field: str | None = None
    fingerprint: str = ""
    # What was read, for people (``streamsynth validate``): sources, row counts, label counts. Not fingerprinted.
    data_summary: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(lab.name for lab in self.labels)

    @property
    def is_classification(self) -> bool:
        return self.kind in ("classification", "pair_classification")

    def seeds_for(self, label: str) -> tuple[Example, ...]:
        return tuple(e for e in self.seeds if e.output == label)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def rows_to_examples(rows: list[dict[str, Any]], spec: TaskSpec, *, split: str, path: DataSource | Path | str) -> list[Example | None]:
    """Map rows to ``Example``s by the spec's fields; an error names the source, the row and the fix.
    A row whose input or output is null or blank is ``None`` in its place (so seeds are drawn as if
    it were there, and ids keep the row numbers)."""
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
        if any(row[f] is None or (isinstance(row[f], str) and not row[f].strip()) for f in needed):
            out.append(None)  # an empty text is no example (real data sets have a few); counted as skipped
            continue
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


def choose_seeds(examples: list[Example | None], spec: TaskSpec) -> list[Example]:
    """Deterministic choice: shuffle with the seeds' random seed, then take k per label or n. Skipped
    rows (``None``) are shuffled with the rest and then dropped, so they move no other row."""
    rng = random.Random(spec.seeds.seed)
    order = list(examples)
    rng.shuffle(order)
    order = [e for e in order if e is not None]
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


def load_task(path: str | os.PathLike) -> Task:
    """Read a task spec and its seed and dev data into a ``Task``."""
    spec_path = Path(path)
    spec = read_spec(spec_path)
    return task_from_spec(spec, base=spec_path.resolve().parent, source=str(spec_path))


def task_from_spec(spec: TaskSpec, *, base: Path, source: str = "<spec>") -> Task:
    splits = {k: getattr(spec.data, k) for k in ("train", "dev", "test") if getattr(spec.data, k) is not None}
    src = spec.seeds.source
    if isinstance(src, str) and src in ("train", "dev"):
        if src not in splits:
            raise SpecError(f"seeds come from '{src}' but 'data.{src}' is not set; set it or change 'seeds.from'", field="seeds.from", path=source)
        seed_src, seed_split, what = resolve_source(splits[src], base, what=f"data.{src}"), src, f"data.{src}"
    elif src == "test":
        raise SpecError("seeds may never come from the test split; use 'train' or 'dev'", field="seeds.from", path=source)
    else:
        seed_src, seed_split, what = resolve_source(src, base, what="seeds.from"), "seeds", "seeds.from"
        if "test" in splits and seed_src.same_as(resolve_source(splits["test"], base, what="data.test")):
            raise SpecError(
                "seeds may never come from the test split, and this is the data 'data.test' names; "
                "use 'train', 'dev' or other data",
                field="seeds.from",
                path=source,
            )
    placed = rows_to_examples(read_rows(seed_src, what=what), spec, split=seed_split, path=seed_src)
    seeds = choose_seeds(placed, spec)
    seed_examples = [e for e in placed if e is not None]
    dev: list[Example] = []
    dev_skipped = 0
    if "dev" in splits:
        dev_src = resolve_source(splits["dev"], base, what="data.dev")
        dev_placed = rows_to_examples(read_rows(dev_src, what="data.dev"), spec, split="dev", path=dev_src)
        dev = [e for e in dev_placed if e is not None]
        dev_skipped = len(dev_placed) - len(dev)
    # The test split is only named here (never read): the final evaluation alone reads it.
    test_source = resolve_source(splits["test"], base, what="data.test") if "test" in splits else None
    summary = {
        "seeds_from": str(seed_src),
        "seed_rows": len(seed_examples),
        "empty_rows_skipped": {k: v for k, v in (("seeds", len(placed) - len(seed_examples)), ("dev", dev_skipped)) if v},
        "seed_label_counts": dict(Counter(e.output for e in seed_examples)),
        "dev": str(dev_src) if "dev" in splits else None,
        "dev_rows": len(dev),
        "test": str(test_source) if test_source else None,
    }
    labels = tuple(Label(lab.name, lab.description) for lab in spec.labels or [])
    attrs = {k: tuple(v) for k, v in (spec.attributes or {}).items()}
    fp = fingerprint({"spec": _fingerprinted(spec), "seeds": [e.to_dict() for e in seeds]})
    return Task(
        name=spec.name,
        description=spec.description.strip(),
        kind=spec.kind,
        input_fields=spec.fields.inputs,
        output_field=spec.fields.output,
        labels=labels,
        seeds=tuple(seeds),
        dev=tuple(dev),
        test_source=test_source,
        answer_format=spec.answer_format,
        attributes=attrs,
        generation=spec.generation,
        tests_field=spec.fields.tests,
        entry_point_field=spec.fields.entry_point,
        fingerprint=fp,
        data_summary=summary,
    )


#: spec fields added after tasks were first fingerprinted, with their defaults: left out of the
#: fingerprint while at the default, so a task keeps its fingerprint (and everything seeded from
#: it, such as a stream's exploration) across versions
_ADDED_LATER = {("generation", "p_true"): False}
#: spec fields that say how a run selects, not what the task is: never fingerprinted (a run's own
#: fingerprint holds its selector), so changing them does not reseed a stream's exploration
_NOT_IDENTITY = (("generation", "max_label_ratio"),)


def _fingerprinted(spec: TaskSpec) -> dict:
    data = spec.model_dump(mode="json", by_alias=True)
    for (section, key), default in _ADDED_LATER.items():
        part = data.get(section)
        if isinstance(part, dict) and part.get(key) == default:
            del part[key]
    for section, key in _NOT_IDENTITY:
        part = data.get(section)
        if isinstance(part, dict):
            part.pop(key, None)
    return data
