"""Task data in the formats people keep: JSONL, CSV, Parquet, a Hugging Face dataset (a saved
folder, or a name loaded with ``datasets.load_dataset``). Each generates; each bad path, missing
field and wrong label gives one line that names the file or dataset and the fix. And
``streamsynth init`` takes a user's CSV to a first run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from streamsynth.api import generate
from streamsynth.backends import FakeBackend
from streamsynth.cli.main import app
from streamsynth.errors import DataError, SpecError
from streamsynth.task import load_task, make_source, read_rows

runner = CliRunner()
LABELS = ["negative", "positive"]
ROWS = [{"text": f"{lab} review number {i} about a film", "label": lab} for i in range(6) for lab in LABELS]


def write_format(folder: Path, fmt: str, rows: list[dict], name: str = "train") -> Path:
    """Write ``rows`` as ``fmt``; returns the path (or dataset name) the spec names."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        p = folder / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "csv":
        p = folder / f"{name}.csv"
        with p.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif fmt == "parquet":
        p = folder / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), p)
    elif fmt in ("hf_disk", "hf"):
        from datasets import ClassLabel, Dataset, Features, Value

        names = sorted({r["label"] for r in rows if "label" in r} | set(LABELS))
        cols = {k: [r.get(k) for r in rows] for k in rows[0]}
        if "label" in cols and all(v in names for v in cols["label"]):
            feats = Features({k: (ClassLabel(names=names) if k == "label" else Value("string")) for k in cols})
            cols["label"] = [names.index(v) for v in cols["label"]]  # stored as class ids, as hub datasets are
            ds = Dataset.from_dict(cols, features=feats)
        else:
            ds = Dataset.from_dict(cols)
        if fmt == "hf_disk":
            p = folder / f"{name}_ds"
            ds.save_to_disk(str(p))
        else:  # a dataset repository layout that load_dataset reads by name (a local folder: no network)
            p = folder / f"{name}_repo"
            (p / "data").mkdir(parents=True)
            ds.to_parquet(str(p / "data" / "train-00000-of-00001.parquet"))
    else:
        raise AssertionError(fmt)
    return p


def data_value(fmt: str, path: Path) -> object:
    return {"hf": str(path), "split": "train"} if fmt == "hf" else path.name


def spec_for(folder: Path, train: object, **extra) -> Path:
    spec = {
        "name": "fmt",
        "description": "Classify the sentiment of a short film review.",
        "kind": "classification",
        "data": {"train": train},
        "fields": {"input": "text", "output": "label"},
        "labels": LABELS,
        "seeds": {"per_label": 2},
        "attributes": {"aspect": ["plot", "acting"]},
        "generation": {"label_check": False, "min_chars": 5},
        **extra,
    }
    p = folder / "spec.yaml"
    p.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return p


FORMATS = ["jsonl", "csv", "parquet", "hf_disk", "hf"]


def reply(request):
    return f"A made-up film review number {request.sample_index}, about nothing at all."


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_loads_and_generates(fmt, tmp_path):
    path = write_format(tmp_path, fmt, ROWS)
    spec = spec_for(tmp_path, data_value(fmt, path))
    task = load_task(spec)
    assert {e.output for e in task.seeds} == set(LABELS)  # hub-style class ids came back as names
    assert all(e.inputs["text"].endswith("about a film") for e in task.seeds)
    report = generate(spec, FakeBackend(reply), budget=4, out=tmp_path / "out")
    assert report.manifest["counts"]["accepted"] == 4


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_rows_whatever_the_format(fmt, tmp_path):
    base = load_task(spec_for(tmp_path / "j", write_format(tmp_path / "j", "jsonl", ROWS).name))
    path = write_format(tmp_path / fmt, fmt, ROWS)
    task = load_task(spec_for(tmp_path / fmt, data_value(fmt, path)))
    assert [(e.id, e.inputs, e.output) for e in task.seeds] == [(e.id, e.inputs, e.output) for e in base.seeds]


def one_line_cli_error(spec: Path) -> str:
    r = runner.invoke(app, ["validate", str(spec)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    return " ".join(lines)  # rich may wrap one long line at the terminal width


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_path_names_the_source_and_the_fix(fmt, tmp_path):
    path = write_format(tmp_path, fmt, ROWS)
    if fmt == "hf":
        spec = spec_for(tmp_path, {"hf": str(tmp_path / "no_such_dataset"), "split": "train"})
        msg = one_line_cli_error(spec)
        assert "no_such_dataset" in msg and "save_to_disk" in msg
    else:
        spec = spec_for(tmp_path, "missing_" + path.name)
        msg = one_line_cli_error(spec)
        assert "data.train" in msg and "no such file" in msg and "missing_" + path.name in msg and "check the path" in msg


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_field_names_the_source_row_and_fix(fmt, tmp_path):
    rows = [{"body": r["text"], "label": r["label"]} for r in ROWS]
    path = write_format(tmp_path, fmt, rows)
    with pytest.raises(DataError) as info:
        load_task(spec_for(tmp_path, data_value(fmt, path)))
    msg = str(info.value)
    assert path.name in msg and "row 1" in msg and "'text'" in msg and "body" in msg and "fix 'fields'" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("fmt", FORMATS)
def test_wrong_label_names_the_source_row_and_fix(fmt, tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[3]["label"] = "neutral"
    path = write_format(tmp_path, fmt, rows)
    with pytest.raises(DataError) as info:
        load_task(spec_for(tmp_path, data_value(fmt, path)))
    msg = str(info.value)
    assert path.name in msg and "row 4" in msg and "'neutral'" in msg and "add it to 'labels'" in msg
    assert "\n" not in msg


def test_format_mapping_for_an_unusual_ending(tmp_path):
    path = write_format(tmp_path, "csv", ROWS)
    odd = path.rename(tmp_path / "reviews.txt")
    with pytest.raises(DataError, match=r"cannot tell the data format.*format: csv"):
        load_task(spec_for(tmp_path, odd.name))
    task = load_task(spec_for(tmp_path, {"path": odd.name, "format": "csv"}))
    assert len(task.seeds) == 4


def test_tsv_and_json_array(tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in ROWS), encoding="utf-8")
    arr = tmp_path / "train.json"
    arr.write_text(json.dumps(ROWS), encoding="utf-8")
    for p in (tsv, arr):
        assert read_rows(make_source(p), what="t") == ROWS


def test_csv_with_a_ragged_row_names_its_line(tmp_path):
    p = tmp_path / "train.csv"
    p.write_text("text,label\nfine,positive\ntoo,many,values\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.csv: row 2 \(line 3\) has more values.*quote"):
        read_rows(make_source(p), what="t")


def test_saved_dataset_dict_needs_a_split_when_it_has_several(tmp_path):
    from datasets import Dataset, DatasetDict

    cols = {"text": [r["text"] for r in ROWS], "label": [r["label"] for r in ROWS]}
    DatasetDict({"train": Dataset.from_dict(cols), "validation": Dataset.from_dict(cols)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"holds the splits \['train', 'validation'\]; say which one"):
        load_task(spec_for(tmp_path, "dd"))
    with pytest.raises(DataError, match=r"has no split 'dev'; it has \['train', 'validation'\]"):
        load_task(spec_for(tmp_path, {"path": "dd", "split": "dev"}))
    task = load_task(spec_for(tmp_path, {"path": "dd", "split": "validation"}))
    assert len(task.seeds) == 4


def test_hub_dataset_offline_not_in_cache_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache: nothing to find
    spec = spec_for(tmp_path, {"hf": "someone/not-cached", "split": "train"})
    msg = one_line_cli_error(spec)
    assert "someone/not-cached" in msg and "local Hugging Face cache" in msg and "save_to_disk" in msg


@pytest.mark.parametrize(
    "value, field, words",
    [
        ({"hf": "x/y"}, "data.train", "needs 'split'"),
        ({"hf": "x/y", "path": "a.csv", "split": "train"}, "data.train", "not both"),
        ({"path": "a.csv", "colour": "red"}, "data.train", "unknown key"),
        ({"path": "a.csv", "config": "plain_text"}, "data.train", "'config' is for 'hf' datasets"),
        (42, "data.train", "must be a path"),
    ],
)
def test_bad_data_mapping_names_the_field(value, field, words, tmp_path):
    with pytest.raises(SpecError) as info:
        load_task(spec_for(tmp_path, value))
    assert info.value.field == field and words in str(info.value)


def test_a_hub_dataset_takes_a_config(tmp_path):
    from streamsynth.task.spec import DataRef

    ref = DataRef.model_validate({"hf": "glue", "config": "sst2", "split": "train"})
    assert (ref.hf, ref.config, ref.split) == ("glue", "sst2", "train")


def test_seeds_from_a_mapping_and_dev_in_another_format(tmp_path):
    write_format(tmp_path, "parquet", ROWS, name="pool")
    dev = write_format(tmp_path, "csv", ROWS[:4], name="dev")
    spec = spec_for(tmp_path, None, seeds={"from": {"path": "pool.parquet"}, "per_label": 1})
    raw = yaml.safe_load(spec.read_text())
    raw["data"] = {"dev": dev.name}
    spec.write_text(yaml.safe_dump(raw))
    task = load_task(spec)
    assert len(task.seeds) == 2 and len(task.dev) == 4 and task.seeds[0].id.startswith("seeds:")


def test_seeds_may_not_be_the_test_data_in_any_spelling(tmp_path):
    path = write_format(tmp_path, "csv", ROWS)
    spec = spec_for(tmp_path, path.name, seeds={"from": {"path": f"./x/../{path.name}", "format": "csv"}, "per_label": 1})
    raw = yaml.safe_load(spec.read_text())
    raw["data"]["test"] = path.name
    spec.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as info:
        load_task(spec)
    assert info.value.field == "seeds.from"


# -- streamsynth init ----------------------------------------------------------------------


def test_init_from_a_csv_then_generate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [{"review": f"{'great' if i % 3 else 'awful'} product, item {i}", "stars": "good" if i % 3 else "bad", "id": str(i)}
            for i in range(30)]
    write_format(tmp_path / "mydata", "csv", rows, name="reviews")
    r = runner.invoke(app, ["init", "shop", "--from", "mydata/reviews.csv", "--input", "review", "--label", "stars"])
    assert r.exit_code == 0, r.output
    assert "bad (10)" in r.output and "good (20)" in r.output
    spec = yaml.safe_load((tmp_path / "shop.yaml").read_text())
    assert [lab["name"] for lab in spec["labels"]] == ["bad", "good"]
    assert spec["data"]["train"] == "mydata/reviews.csv" and spec["fields"] == {"input": "review", "output": "stars"}
    assert "#" in (tmp_path / "shop.yaml").read_text()  # commented for the user

    r = runner.invoke(app, ["validate", "shop.yaml"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["generate", "shop.yaml", "--backend", "fake", "--budget", "6", "--out", "run", "--quiet",
                            "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["usage"]["calls"] == 6
    assert (tmp_path / "run" / "samples.jsonl").is_file()


def test_init_never_overwrites_without_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_format(tmp_path, "csv", ROWS)
    (tmp_path / "mine.yaml").write_text("my own notes\n")
    r = runner.invoke(app, ["init", "mine", "--from", "train.csv"])
    assert r.exit_code == 2 and "already exists" in r.output and "--force" in r.output
    assert (tmp_path / "mine.yaml").read_text() == "my own notes\n"
    r = runner.invoke(app, ["init", "mine", "--from", "train.csv", "--force"])
    assert r.exit_code == 0 and load_task(tmp_path / "mine.yaml").label_names == tuple(LABELS)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--input", "body"], "no field 'body'"),
        (["--label", "stars"], "no field 'stars'"),
        (["--from", "nope.csv"], "no such file"),
    ],
)
def test_init_bad_input_is_one_clear_line(args, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_format(tmp_path, "csv", ROWS)
    cmd = ["init", "t", "--from", "train.csv", *args]
    r = runner.invoke(app, cmd)
    assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output
    assert not (tmp_path / "t.yaml").exists()


def test_init_refuses_a_free_text_column_as_labels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [{"text": f"question {i}", "label": f"answer {i}"} for i in range(80)]
    write_format(tmp_path, "csv", rows)
    r = runner.invoke(app, ["init", "t", "--from", "train.csv", "--kind", "classification"])
    assert r.exit_code == 2 and "80 distinct values" in r.output and "--kind qa" in r.output
    r = runner.invoke(app, ["init", "t", "--from", "train.csv"])  # guessed: free-form answers
    assert r.exit_code == 0 and load_task(tmp_path / "t.yaml").kind == "qa"
