"""``streamsynth init``: a commented starter spec written from a user's own data file.

``starter_spec`` reads the data once, checks the named fields, fills the label set from the data
and returns YAML text that ``load_task`` accepts as it is. It writes nothing; the CLI does.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from streamsynth.errors import ConfigError, DataError
from streamsynth.task.sources import make_source, read_rows

MAX_LABELS = 50  # more distinct values than this is not a label set


@dataclass(frozen=True, slots=True)
class Starter:
    text: str  # the YAML
    rows: int
    label_counts: dict[str, int]  # empty for qa


def _q(value: str) -> str:
    """A YAML scalar, quoted only when needed (JSON strings are valid YAML)."""
    plain = re.fullmatch(r"[A-Za-z0-9_./-][A-Za-z0-9_ ./-]*", value) and value.strip() == value
    reserved = value.lower() in {"yes", "no", "true", "false", "on", "off", "null", "~", ""}
    return value if plain and not reserved and not re.fullmatch(r"[-+.0-9eE]+", value) else json.dumps(value)


def _rel(target: Path, spec_dir: Path) -> str:
    try:
        return os.path.relpath(target.resolve(), spec_dir.resolve())
    except ValueError:  # another drive on Windows
        return str(target.resolve())


def starter_spec(name: str, data: Path, *, spec_path: Path, inputs: list[str], label: str, kind: str | None = None,
                 dev: Path | None = None, test: Path | None = None, per_label: int = 8) -> Starter:
    """Build the starter spec for ``data``; raise a ``ConfigError``/``DataError`` that says what to fix."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"task name {name!r} may hold only letters, digits, '_', '.' and '-'; e.g. my_task")
    if not inputs:
        raise ConfigError("name the input field with --input, e.g. --input text (twice for sentence pairs)")
    if len(set(inputs)) != len(inputs):
        raise ConfigError(f"--input names the same field twice: {inputs}")
    source = make_source(data)
    rows = read_rows(source, what="--from")
    columns = list(rows[0])
    for f in [*inputs, label]:
        if f not in rows[0]:
            raise DataError(f"{source}: there is no field {f!r}; its fields are {columns}; pick them with --input and --label")
    values = [r.get(label) for r in rows]
    counts = Counter("" if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values)
    if kind is None:
        kind = "qa" if len(counts) > MAX_LABELS else ("pair_classification" if len(inputs) == 2 else "classification")
    classify = kind in ("classification", "pair_classification")
    if classify:
        if "" in counts:
            raise DataError(f"{source}: {counts['']} rows have an empty {label!r}; fill or drop them, then run init again")
        if len(counts) > MAX_LABELS:
            raise DataError(
                f"{source}: field {label!r} has {len(counts)} distinct values, too many for a label set "
                f"(at most {MAX_LABELS}); check --label, or use --kind qa for free-form answers"
            )
        if len(counts) < 2:
            raise DataError(f"{source}: field {label!r} has only the value {next(iter(counts))!r}; a classifier needs at least two labels")
        if kind == "pair_classification" and len(inputs) != 2:
            raise ConfigError("a pair_classification task needs exactly two --input fields, e.g. --input premise --input hypothesis")
    elif kind not in ("qa",):
        raise ConfigError(f"--kind must be classification, pair_classification or qa; got {kind!r}")

    spec_dir = spec_path.parent
    noun = "sentence pair" if len(inputs) == 2 else "text"
    lines = [
        f"# streamsynth task spec, written by `streamsynth init` from {data.name} ({len(rows)} rows).",
        "# Edit the description and the label descriptions: the synthesizer reads them.",
        "# Check it with `streamsynth validate " + spec_path.name + "`; run it with `streamsynth generate " + spec_path.name + "`.",
        "# Every key is explained in docs/task-spec.md.",
        f"name: {_q(name)}",
    ]
    if classify:
        names = sorted(counts)
        desc = f"Classify each {noun} as one of: {', '.join(names)}."
    else:
        names = []
        desc = f"Given the {' and '.join(inputs)}, write the {label}."
    lines += [
        "description: >-   # one or two sentences on what the task is and what a good example looks like",
        f"  {desc}",
        f"kind: {kind}",
        "",
        "data:                              # paths are relative to this file's folder",
        f"  train: {_q(_rel(data, spec_dir))}          # real examples; seeds are drawn from here",
    ]
    if dev is not None:
        make_source(dev)
        lines.append(f"  dev: {_q(_rel(dev, spec_dir))}            # used for feedback while generating")
    else:
        lines.append("  # dev: my_dev.csv                 # optional: data for feedback while generating")
    if test is not None:
        make_source(test)
        lines.append(f"  test: {_q(_rel(test, spec_dir))}           # read only by the final evaluation")
    else:
        lines.append("  # test: my_test.csv               # optional: read only by the final evaluation")
    input_yaml = _q(inputs[0]) if len(inputs) == 1 else "[" + ", ".join(_q(f) for f in inputs) + "]"
    lines += ["", "fields:", f"  input: {input_yaml}", f"  output: {_q(label)}", ""]
    if classify:
        lines.append("labels:                            # from the data; counts are rows in " + data.name)
        for n in names:
            lines += [f"  - name: {_q(n)}                 # {counts[n]} rows", '    description: ""            # what a text with this label is like']
        lines += ["", "seeds:", f"  per_label: {per_label}                     # real examples per label shown to the synthesizer", "  seed: 0"]
    else:
        lines += ["# answer_format: \"a number\"          # optional: what an answer must look like", "",
                  "seeds:", f"  n: {per_label}                             # real examples shown to the synthesizer", "  seed: 0"]
    lines += [
        "",
        "# attributes:                      # optional: one value of each is picked per generated sample",
        "#   topic: [sports, politics, science]",
        "#   length: [short, long]",
        "",
        "generation:",
        f"  input_noun: {_q(noun)}                # what one input is called in prompts, e.g. 'product review'",
        "",
    ]
    return Starter("\n".join(_align(line) for line in lines), len(rows), {n: counts[n] for n in names})


def _align(line: str, col: int = 40) -> str:
    """Line up trailing comments (``value   # comment``) at one column; full-line comments stay."""
    m = re.match(r"^(\s*[^#\s].*?)\s{2,}(#.*)$", line)
    if not m:
        return line
    return f"{m.group(1):<{col}}{m.group(2)}" if len(m.group(1)) < col else f"{m.group(1)}  {m.group(2)}"
