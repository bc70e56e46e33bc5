"""Task specs: the shipped examples load, seeds are chosen as documented, bad specs and bad data
give errors that name what to fix."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamsynth.errors import DataError, SpecError
from streamsynth.task import load_task, parse_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DATA = EXAMPLES / "data"  # the examples carry their data: a clone runs with nothing beside it
EXAMPLE_SPECS = sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "stream.yaml")  # stream.yaml lists tasks


# -- helpers ------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def classification_rows(labels=("neg", "pos", "neu"), per_label: int = 10) -> list[dict[str, str]]:
    return [{"text": f"{lab} example number {i}", "label": lab} for i in range(per_label) for lab in labels]


def base_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "toy",
        "description": "Classify toy sentences.",
        "kind": "classification",
        "data": {"train": "train.jsonl"},
        "fields": {"input": "text", "output": "label"},
        "labels": ["neg", "pos", "neu"],
    }
    spec.update(changes)
    return spec


def write_spec(folder: Path, spec: dict[str, Any] | str, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A folder with train/dev/test JSONL for a 3-label classification task."""
    write_jsonl(tmp_path / "train.jsonl", classification_rows())
    write_jsonl(tmp_path / "dev.jsonl", classification_rows(per_label=2))
    write_jsonl(tmp_path / "test.jsonl", classification_rows(per_label=2))
    return tmp_path


def spec_error(raw: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    return info.value


# -- the shipped examples -----------------------------------------------------------------


def test_examples_exist() -> None:
    assert EXAMPLE_SPECS, f"no example specs in {EXAMPLES}"


def test_every_data_folder_has_an_example_and_a_source_note() -> None:
    folders = {p.name for p in DATA.iterdir() if p.is_dir()}
    assert folders and folders <= {p.stem for p in EXAMPLE_SPECS}
    for f in folders:
        assert "License" in (DATA / f / "SOURCE.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=[p.stem for p in EXAMPLE_SPECS])
def test_example_points_inside_the_repository(path: Path) -> None:
    assert "shared" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=[p.stem for p in EXAMPLE_SPECS])
def test_example_loads(path: Path) -> None:
    task = load_task(path)
    assert task.name == path.stem
    assert task.description
    assert task.seeds
    assert all(not e.id.startswith("test") for e in task.seeds + task.dev)
    if task.test_source is not None:
        assert task.test_source.path.is_file() and task.test_source.path.is_relative_to(DATA.resolve())
    if task.is_classification:
        counts = Counter(e.output for e in task.seeds)
        assert counts == {name: 8 for name in task.label_names}
        assert all(lab.description for lab in task.labels)
        assert task.generation.input_noun != "text"
    if task.kind == "pair_classification":
        assert len(task.input_fields) == 2


def test_sst2_example_settings() -> None:
    task = load_task(EXAMPLES / "sst2.yaml")
    assert task.generation.max_new_tokens == 80
    assert task.generation.examples_in_prompt == 1
    assert set(task.attributes) == {"aspect", "style", "length"}
    assert task.dev and task.test_source


# -- seeds --------------------------------------------------------------------------------


def test_seeds_k_per_label_in_label_order(toy: Path) -> None:
    task = load_task(write_spec(toy, base_spec(seeds={"per_label": 3, "seed": 0})))
    assert Counter(e.output for e in task.seeds) == {"neg": 3, "pos": 3, "neu": 3}
    assert [e.output for e in task.seeds] == ["neg"] * 3 + ["pos"] * 3 + ["neu"] * 3
    assert all(e.id.startswith("train:") for e in task.seeds)
    assert task.seeds_for("pos") == tuple(e for e in task.seeds if e.output == "pos")


def test_seeds_deterministic_for_a_seed_and_different_for_another(toy: Path) -> None:
    def ids(seed: int, name: str) -> list[str]:
        path = write_spec(toy, base_spec(seeds={"per_label": 3, "seed": seed}), name=name)
        return [e.id for e in load_task(path).seeds]

    first, again, other = ids(0, "a.yaml"), ids(0, "b.yaml"), ids(1, "c.yaml")
    assert first == again
    assert first != other


def test_seeds_n_in_all(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"q": f"question {i}?", "a": str(i)} for i in range(20)])
    spec = base_spec(kind="qa", labels=None, fields={"input": "q", "output": "a"}, seeds={"n": 5, "seed": 3})
    task = load_task(write_spec(tmp_path, spec))
    assert len(task.seeds) == 5 and len({e.id for e in task.seeds}) == 5


def test_seeds_from_dev(toy: Path) -> None:
    task = load_task(write_spec(toy, base_spec(data={"dev": "dev.jsonl"}, seeds={"from": "dev", "per_label": 1})))
    assert len(task.seeds) == 3 and all(e.id.startswith("dev:") for e in task.seeds)


def test_label_without_seed_rows(toy: Path) -> None:
    # 'maybe' is a declared label but the data has no row with it
    write_jsonl(toy / "train.jsonl", classification_rows(labels=("neg", "pos")))
    path = write_spec(toy, base_spec(labels=["neg", "pos", "maybe"], seeds={"per_label": 2}))
    with pytest.raises(DataError, match="no seed example has label 'maybe'"):
        load_task(path)


# -- paths --------------------------------------------------------------------------------


def test_relative_paths_start_at_the_spec_folder(toy: Path, tmp_path: Path, monkeypatch) -> None:
    spec = base_spec(data={"train": "../train.jsonl", "test": "../test.jsonl"})
    path = write_spec(toy / "specs", spec)
    monkeypatch.chdir(tmp_path.parent)  # somewhere else entirely
    task = load_task(path)
    assert task.seeds and task.test_source.path.resolve() == (toy / "test.jsonl").resolve()


def test_env_vars_expand(toy: Path, monkeypatch) -> None:
    monkeypatch.setenv("TOY_DATA", str(toy))
    path = write_spec(toy / "elsewhere", base_spec(data={"train": "$TOY_DATA/train.jsonl"}))
    assert load_task(path).seeds


def test_numeric_and_boolean_labels_match_the_data(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"row {i}", "label": i % 2} for i in range(6)])
    assert load_task(write_spec(tmp_path, base_spec(labels=[0, 1]), "ints.yaml")).label_names == ("0", "1")
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"row {i}", "label": i % 2 == 0} for i in range(6)])
    spec = "name: b\ndescription: d\nkind: classification\ndata: {train: train.jsonl}\n" \
        "fields: {input: text, output: label}\nlabels: [true, false]\n"
    assert load_task(write_spec(tmp_path, spec, "bools.yaml")).label_names == ("true", "false")


def test_label_forms(toy: Path) -> None:
    as_map = parse_spec(base_spec(labels={"neg": "bad", "pos": "good", "neu": None}))
    as_dicts = parse_spec(base_spec(labels=[{"name": "neg", "description": "bad"}, "pos", "neu"]))
    assert [(lab.name, lab.description) for lab in as_map.labels] == [("neg", "bad"), ("pos", "good"), ("neu", "")]
    assert [lab.name for lab in as_dicts.labels] == ["neg", "pos", "neu"]


# -- bad specs: SpecError naming the field -------------------------------------------------


def test_missing_name() -> None:
    raw = base_spec()
    del raw["name"]
    err = spec_error(raw)
    assert err.field == "name" and "required" in str(err)


def test_unknown_kind_lists_the_kinds() -> None:
    err = spec_error(base_spec(kind="regression"))
    assert err.field == "kind"
    for kind in ("classification", "pair_classification", "qa", "code"):
        assert kind in str(err)
    assert "regression" in str(err)


def test_typo_key_is_named() -> None:
    raw = base_spec()
    raw["lables"] = raw.pop("labels")
    err = spec_error(raw)
    assert err.field == "lables" and "spelling" in str(err)


def test_typo_nested_key_is_named() -> None:
    err = spec_error(base_spec(generation={"max_tokens": 64}))
    assert err.field == "generation.max_tokens" and "spelling" in str(err)


def test_labels_with_one_entry() -> None:
    err = spec_error(base_spec(labels=["only"]))
    assert err.field == "labels" and "at least two" in str(err)


def test_duplicate_labels() -> None:
    err = spec_error(base_spec(labels=["a", "b", "a"]))
    assert err.field == "labels" and "duplicates" in str(err)


def test_pair_task_with_one_input_field() -> None:
    err = spec_error(base_spec(kind="pair_classification"))
    assert err.field == "fields.input" and "two fields" in str(err)


def test_input_must_be_names() -> None:
    assert spec_error(base_spec(fields={"input": 3, "output": "label"})).field == "fields.input"
    assert spec_error(base_spec(fields={"input": [], "output": "label"})).field == "fields.input"


def test_code_task_needs_tests_field() -> None:
    err = spec_error(base_spec(kind="code", labels=None, fields={"input": "text", "output": "code"}))
    assert err.field == "fields.tests"


def test_per_label_and_n_together() -> None:
    err = spec_error(base_spec(seeds={"per_label": 2, "n": 5}))
    assert err.field == "seeds.per_label" and "not both" in str(err)


def test_per_label_only_for_classification() -> None:
    err = spec_error(base_spec(kind="qa", labels=None, seeds={"per_label": 2}))
    assert err.field == "seeds.per_label"


def test_train_required_for_default_seeds() -> None:
    assert spec_error(base_spec(data={"dev": "dev.jsonl"})).field == "data.train"


def test_generation_bounds() -> None:
    assert spec_error(base_spec(generation={"min_chars": 50, "max_chars": 20})).field == "generation.min_chars"
    assert spec_error(base_spec(generation={"examples_in_prompt": 99})).field == "generation.examples_in_prompt"


def test_seeds_from_test_refused(toy: Path) -> None:
    spec = base_spec(data={"train": "train.jsonl", "test": "test.jsonl"}, seeds={"from": "test", "per_label": 2})
    with pytest.raises(SpecError) as info:
        load_task(write_spec(toy, spec))
    assert info.value.field == "seeds.from" and "never" in str(info.value)


def test_seeds_from_the_test_file_by_path_refused(toy: Path) -> None:
    spec = base_spec(data={"train": "train.jsonl", "test": "test.jsonl"}, seeds={"from": "./sub/../test.jsonl"})
    with pytest.raises(SpecError) as info:
        load_task(write_spec(toy, spec))
    assert info.value.field == "seeds.from"


def test_bad_yaml_reports_the_line(tmp_path: Path) -> None:
    text = "name: toy\ndescription: d\nkind: classification\ndata: {train: train.jsonl\nfields: {input: text, output: label}\n"
    with pytest.raises(SpecError, match=r"not valid YAML at line 5"):
        load_task(write_spec(tmp_path, text))


def test_a_spec_or_stream_file_saved_as_utf16_names_the_file_and_the_fix(tmp_path: Path) -> None:
    from streamsynth.learn.stream import load_stream

    for name, load in (("t.yaml", load_task), ("s.yaml", load_stream)):
        (tmp_path / name).write_bytes("name: toy\n".encode("utf-16"))  # what PowerShell's > writes
        with pytest.raises(SpecError, match=f"{name}.*not UTF-8 text.*save it as UTF-8"):
            load(tmp_path / name)


def test_spec_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="mapping"):
        load_task(write_spec(tmp_path, "- just\n- a list\n"))


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_task(tmp_path / "nope.yaml")


# -- bad data: DataError ------------------------------------------------------------------


def test_missing_data_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such file .*train\.jsonl"):
        load_task(write_spec(tmp_path, base_spec()))


def test_missing_test_file(toy: Path) -> None:
    with pytest.raises(DataError, match="data.test"):
        load_task(write_spec(toy, base_spec(data={"train": "train.jsonl", "test": "gone.jsonl"})))


def test_non_json_line_names_its_number(toy: Path) -> None:
    good = json.dumps({"text": "fine", "label": "pos"})
    (toy / "train.jsonl").write_text(f"{good}\n{good}\n{{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl:3: not valid JSON"):
        load_task(write_spec(toy, base_spec()))


def test_non_object_line(toy: Path) -> None:
    (toy / "train.jsonl").write_text('["a", "list"]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r":1: expected a JSON object"):
        load_task(write_spec(toy, base_spec()))


def test_row_missing_the_input_field(toy: Path) -> None:
    write_jsonl(toy / "train.jsonl", [{"text": "ok", "label": "pos"}, {"sentence": "no text", "label": "neg"}])
    with pytest.raises(DataError, match=r"row 2 has no field 'text'"):
        load_task(write_spec(toy, base_spec()))


def test_rows_with_an_empty_input_are_skipped_never_seeds_and_counted(toy: Path) -> None:
    rows = [{"text": f"fine text {i}", "label": "pos" if i % 2 else "neg"} for i in range(6)]
    rows[1]["text"], rows[2]["text"] = None, "   "
    write_jsonl(toy / "train.jsonl", rows)
    task = load_task(write_spec(toy, base_spec(labels=["neg", "pos"])))
    assert all(e.inputs["text"].strip() and e.inputs["text"] != "null" for e in task.seeds)
    assert {e.id for e in task.seeds} <= {"train:0", "train:3", "train:4", "train:5"}  # ids keep the row numbers
    assert task.data_summary["empty_rows_skipped"] == {"seeds": 2}
    rows[1]["text"], rows[2]["text"] = "filled in", "filled in too"
    write_jsonl(toy / "train.jsonl", rows)
    full = load_task(write_spec(toy, base_spec(labels=["neg", "pos"])))
    # the skipped rows moved no other row: the seeds drawn are those of the full file, minus them
    assert [e.id for e in task.seeds] == [e.id for e in full.seeds if e.id not in ("train:1", "train:2")][: len(task.seeds)]


def test_label_not_in_the_label_set(toy: Path) -> None:
    write_jsonl(toy / "train.jsonl", [{"text": "ok", "label": "pos"}, {"text": "hm", "label": "mixed"}])
    with pytest.raises(DataError, match=r"row 2 has label 'mixed', which is not in the spec's labels"):
        load_task(write_spec(toy, base_spec()))


def test_bad_dev_rows_are_caught_too(toy: Path) -> None:
    write_jsonl(toy / "dev.jsonl", [{"text": "hm", "label": "mixed"}])
    with pytest.raises(DataError, match=r"dev\.jsonl: row 1 has label 'mixed'"):
        load_task(write_spec(toy, base_spec(data={"train": "train.jsonl", "dev": "dev.jsonl"})))


def test_empty_data_file(toy: Path) -> None:
    (toy / "train.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        load_task(write_spec(toy, base_spec()))


def test_non_utf8_data_file(toy: Path) -> None:
    (toy / "train.jsonl").write_bytes(b'{"text": "ok", "label": "pos"}\n{"text": "caf\xe9", "label": "pos"}\n')
    with pytest.raises(DataError, match="UTF-8"):
        load_task(write_spec(toy, base_spec()))


def test_a_field_added_later_leaves_existing_fingerprints_alone(tiny_task_spec):
    """Fingerprints seed a stream's exploration: a new spec field at its default must not change them."""
    from pathlib import Path

    from streamsynth.task import load_task

    root = Path(__file__).resolve().parents[1]
    assert load_task(root / "examples" / "sst2.yaml").fingerprint.startswith("c924e3dd0ba5")  # as in 2026-12 results
    plain = load_task(tiny_task_spec).fingerprint
    text = tiny_task_spec.read_text()
    tiny_task_spec.write_text(text.replace("label_check: false}", "label_check: false, p_true: false}"))
    assert load_task(tiny_task_spec).fingerprint == plain
    tiny_task_spec.write_text(text.replace("label_check: false}", "label_check: false, p_true: true}"))
    assert load_task(tiny_task_spec).fingerprint != plain
    # how a run selects is not what the task is: the label balance never changes the fingerprint
    for ratio in ("0", "1.5", "2"):
        tiny_task_spec.write_text(text.replace("label_check: false}", f"label_check: false, max_label_ratio: {ratio}}}"))
        assert load_task(tiny_task_spec).fingerprint == plain
