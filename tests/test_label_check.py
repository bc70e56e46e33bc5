"""The seed-centroid label-consistency check with the real packaged embedder."""

import pytest

from streamsynth.quality import SeedLabelConsistencyCheck
from streamsynth.records import Provenance, Sample
from streamsynth.task import load_task


def _sample(text, label):
    return Sample("x", "tiny", {"text": text}, label, Provenance("s", "p", "f", "r", "m", 0, 0))


def test_label_check_rejects_text_nearer_the_other_label(tiny_task_spec):
    task = load_task(tiny_task_spec)
    check = SeedLabelConsistencyCheck()
    check.start(task)
    good = check.verify(_sample("a wonderful, joyful film with a superb cast", "positive"), task)
    assert good.passed and good.score > 0
    bad = check.verify(_sample("a wonderful, joyful film with a superb cast", "negative"), task)
    assert not bad.passed and bad.score < 0
    assert "nearer the seeds of 'positive'" in bad.reason
    strict = SeedLabelConsistencyCheck(embedder=check.embedder, min_margin=1.5)
    assert not strict.verify(_sample("a wonderful, joyful film with a superb cast", "positive"), task).passed


def test_default_program_uses_the_label_check_for_classification_only(tiny_task_spec, tmp_path):
    from streamsynth.program import default_program

    text = tiny_task_spec.read_text()
    on = tmp_path / "on.yaml"
    on.write_text(text.replace("label_check: false", "label_check: true"))
    auto = tmp_path / "auto.yaml"
    auto.write_text(text.replace(", label_check: false", ""))
    names = lambda p: [c.name for c in default_program(load_task(p)).checks]
    assert "label_consistency" not in names(tiny_task_spec)
    assert "label_consistency" in names(on)
    assert "label_consistency" in names(auto)
