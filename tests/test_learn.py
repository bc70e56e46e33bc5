"""Patterns, the exploring method and the SynLearner's program updates (no model, no store)."""

from collections import Counter

import pytest

from streamsynth.errors import ConfigError
from streamsynth.learn.learner import SynLearner, learning_program
from streamsynth.learn.patterns import ExploringStrategy, Pattern, check_space, factored_choice, pattern_space, thompson_choice
from streamsynth.learn.stream import split_budget
from streamsynth.program import SynthesisProgram
from streamsynth.task import load_task
from streamsynth.testing import check_method


@pytest.fixture
def task(tiny_task_spec):
    return load_task(tiny_task_spec)


def test_pattern_ids_round_trip_and_space():
    p = Pattern("contrast", 3, 0.7)
    assert Pattern.from_id(p.id) == p
    space = pattern_space()
    assert len(space) == 12 and len(set(space)) == 12
    assert any("tpl=guided" in x for x in pattern_space(guided=True))
    with pytest.raises(ConfigError, match="tpl=NAME"):
        Pattern.from_id("nonsense")
    with pytest.raises(ConfigError, match="unknown template"):
        pattern_space(templates=("nope",))


def test_thompson_choice_follows_the_policy_and_is_seeded():
    policy = {"tpl=plain|shots=1|temp=0.7": (40.0, 2.0), "tpl=direct|shots=1|temp=0.7": (2.0, 40.0)}
    picks = Counter(thompson_choice(policy, s) for s in range(200))
    assert picks["tpl=plain|shots=1|temp=0.7"] > 190
    assert [thompson_choice(policy, s) for s in range(20)] == [thompson_choice(policy, s) for s in range(20)]


def test_factored_choice_lets_one_patterns_evidence_teach_the_patterns_that_share_its_parts():
    policy = {pid: (1.0, 1.0) for pid in pattern_space()}
    policy["tpl=plain|shots=1|temp=1"] = (40.0, 1.0)  # strong evidence for one pattern
    policy["tpl=direct|shots=3|temp=0.7"] = (1.0, 40.0)  # and against another
    joint = Counter(thompson_choice(policy, s) for s in range(400))
    factored = Counter(factored_choice(policy, s) for s in range(400))
    # joint: an untried pattern is an untried pattern, whatever its parts
    untried_sharing, untried_other = "tpl=contrast|shots=1|temp=1", "tpl=contrast|shots=3|temp=0.7"
    assert joint[untried_sharing] < 20 and joint[untried_other] < 20
    # factored: shots=1 and temp=1 drew their evidence from the strong pattern, shots=3 and temp=0.7 the opposite
    assert factored[untried_sharing] > 3 * max(1, factored[untried_other])
    shots1 = sum(n for pid, n in factored.items() if "shots=1" in pid)
    assert shots1 > 0.8 * 400
    assert [factored_choice(policy, s) for s in range(30)] == [factored_choice(policy, s) for s in range(30)]


def test_factored_choice_pools_priors_without_multiplying_them():
    space = pattern_space()  # 12 patterns: 6 with shots=3
    prior = {pid: ((1 + 8 * 0.9, 1 + 8 * 0.1) if "shots=3" in pid else (1.0, 1.0)) for pid in space}
    # this task's own evidence: 30 samples with shots=1 earned 0.7 each, 30 with shots=3 earned 0.5
    policy = {}
    for pid in space:
        r = 0.7 if "shots=1" in pid else 0.5
        policy[pid] = [prior[pid][0] + 5 * r, prior[pid][1] + 5 * (1 - r)]
    picks = [factored_choice(policy, s, prior) for s in range(400)]
    assert sum("shots=1" in p for p in picks) > 0.75 * 400  # 30 own samples outweigh a prior worth 8
    # had the six shots=3 priors been summed (48 pseudo-observations at 0.9), shots=3 would have won
    blind = [factored_choice(policy, s) for s in range(400)]
    assert sum("shots=1" in p for p in blind) < 0.5 * 400


def test_factored_choice_falls_back_to_the_joint_draw_when_the_policy_is_not_a_full_product():
    policy = {"tpl=plain|shots=1|temp=1": (1.0, 1.0), "tpl=direct|shots=3|temp=0.7": (1.0, 1.0)}
    picks = {factored_choice(policy, s) for s in range(50)}
    assert picks == set(policy)  # never a composed pattern the policy does not offer


def test_exploring_strategy_draw_is_checked_and_kept_by_clone(task):
    with pytest.raises(ConfigError, match="draw"):
        ExploringStrategy(draw="greedy")
    m = ExploringStrategy(draw="factored", prior={pid: (2.0, 1.0) for pid in pattern_space()})
    assert m.clone(guidance="").draw == "factored" and m.config_state()["params"]["draw"] == "factored"
    joint = ExploringStrategy(prior={pid: (2.0, 1.0) for pid in pattern_space()})  # the joint draw ignores a prior
    assert "draw" not in joint.config_state()["params"] and "prior" not in joint.config_state()["params"]
    assert m.clone(policy={pid: (5.0, 1.0) for pid in pattern_space()}).prior == m.prior  # a learner's update keeps it
    assert m.plan(task, 0, 0).pattern in m.policy
    check_method(m, task)


@pytest.mark.parametrize("space, words", [
    ({"shots": []}, "non-empty list"),
    ({"shots": [1, 1]}, "twice"),
    ({"shots": [1, 17]}, "0 to 16"),
    ({"temperatures": [0.7, 3.0]}, "0 to 2"),
    ({"templates": ["guided"]}, "joins by itself"),
    ({"templates": ["fancy"]}, "choose from"),
    ({"colours": [1]}, "unknown pattern dimensions"),
    ({"templates": ["plain", "rephrase"], "shots": [0, 1]}, "rewrites a seed shown in the prompt"),
])
def test_a_bad_pattern_space_is_refused_with_what_is_allowed(space, words):
    with pytest.raises(ConfigError, match=words):
        check_space(space)
    with pytest.raises(ConfigError, match=words):
        ExploringStrategy(space=space)


def test_the_explorer_samples_its_own_pattern_space_and_the_learner_keeps_to_it(task):
    space = {"templates": ["plain"], "shots": [2, 0], "temperatures": [0.9]}
    m = ExploringStrategy(space=space)
    assert sorted(m.policy) == ["tpl=plain|shots=0|temp=0.9", "tpl=plain|shots=2|temp=0.9"]
    items = [m.plan(task, i, 7) for i in range(20)]
    assert {it.pattern for it in items} <= set(m.policy) and {len(it.demonstrations) for it in items} == {0, 2}
    assert all(it.params.temperature == 0.9 for it in items)
    assert m.config_state()["params"]["space"]["shots"] == [0, 2]
    assert "space" not in ExploringStrategy().config_state()["params"]  # the default: fingerprints as before
    assert "space" not in ExploringStrategy(space={"shots": [3, 1]}).config_state()["params"]  # the default, spelt out
    updated = SynLearner().partial_fit(SynthesisProgram([m], [], None), {"tpl=plain|shots=2|temp=0.9": [1.0]})
    assert updated.methods[0].space == m.space and "space" in m.config_state()["params"]
    assert m.arms(guided=True) == sorted(m.policy) + ["tpl=guided|shots=0|temp=0.9", "tpl=guided|shots=2|temp=0.9"]
    check_method(m, task)


def test_exploring_strategy_records_its_pattern_and_uses_it(task):
    m = ExploringStrategy(policy={"tpl=contrast|shots=3|temp=0.7": (1, 1)})
    item = m.plan(task, 0, 0)
    assert item.pattern == "tpl=contrast|shots=3|temp=0.7"
    assert item.params.temperature == 0.7 and len(item.demonstrations) == 3
    last = m.messages(item)[-1].content
    other = [lab for lab in task.label_names if lab != item.label][0]
    assert f"not as {other}" in last


def test_rephrase_asks_to_rewrite_the_last_seed_shown_without_new_attributes(task):
    m = ExploringStrategy(policy={"tpl=rephrase|shots=2|temp=0.7": (1, 1)}, attributes={"tone": ["dry", "warm"]})
    item = m.plan(task, 0, 0)
    assert len(item.demonstrations) == 2 and item.attributes == {} and item.conditioning["attributes"] == {}
    msgs = m.messages(item)
    # the seeds as earlier turns, the last of them the one to say again; then only the ask
    assert [x.role for x in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[3].content == item.demonstrations[-1].inputs[task.input_fields[0]]
    assert msgs[-1].content.startswith(f"Now write the last {task.generation.input_noun} again in other words")
    assert "Tone" not in msgs[-1].content and item.label not in msgs[-1].content
    # the other patterns draw the same labels, attributes and seeds as in a space without it
    both = ExploringStrategy(space={"templates": ["plain", "rephrase"]}, attributes={"tone": ["dry", "warm"]})
    plain = ExploringStrategy(policy={pid: (1, 1) for pid in both.policy if "plain" in pid}, attributes={"tone": ["dry", "warm"]})
    compared = 0
    for i in range(24):
        a, b = both.plan(task, i, 3), plain.plan(task, i, 3)
        assert a.label == b.label
        if a.pattern == b.pattern:
            assert (a.attributes, a.demonstrations) == (b.attributes, b.demonstrations)
            compared += 1
    assert compared >= 3
    # earlier runs' exemplars may join the demonstrations, but the text to say again is a real seed
    ex = ExploringStrategy(policy={"tpl=rephrase|shots=3|temp=0.7": (1, 1)},
                           exemplars={lab: [f"an exemplar of {lab} {k}" for k in range(8)] for lab in task.label_names})
    lasts = [ex.plan(task, i, 0).demonstrations for i in range(12)]
    assert any(d.id.startswith("exemplar-") for ds in lasts for d in ds)
    assert all(not ds[-1].id.startswith("exemplar-") for ds in lasts)
    # a label with no seeds has nothing to rewrite: the plain ask
    bare = type(item)(**{**{f: getattr(item, f) for f in item.__dataclass_fields__}, "demonstrations": ()})
    assert m.messages(bare)[-1].content.startswith("Write one")
    check_method(m, task)


def test_exploring_strategy_passes_the_method_contract(task):
    check_method(ExploringStrategy(), task)


def test_guided_needs_guidance_and_carries_it(task):
    with pytest.raises(ConfigError, match="guidance"):
        ExploringStrategy(policy={"tpl=guided|shots=1|temp=0.7": (1, 1)})
    m = ExploringStrategy(policy={"tpl=guided|shots=1|temp=0.7": (1, 1)}, guidance="Keep it short {really}.")
    assert m.messages(m.plan(task, 0, 0))[-1].content.endswith("Keep it short {really}.")


def test_partial_fit_moves_the_policy_and_never_changes_its_input(task):
    learner = SynLearner()
    program = learning_program(task)
    before = program.dump_state()
    good, bad = "tpl=direct|shots=1|temp=0.7", "tpl=plain|shots=3|temp=1"
    improved = learner.partial_fit(program, {good: [1.0] * 30, bad: [0.0] * 30, "tpl=unknown|shots=1|temp=1": [1.0]})
    assert program.dump_state() == before, "the learner changed the program it was given"
    assert isinstance(improved, SynthesisProgram)
    pol = improved.methods[0].policy
    assert pol[good] == [31.0, 1.0] and pol[bad] == [1.0, 31.0]
    picks = Counter(improved.methods[0].plan(task, i, 0).pattern for i in range(100))
    assert picks[good] > 60 and picks[bad] == 0


def test_learner_without_store_starts_uniform(task):
    import numpy as np

    program, exp = SynLearner().fit(learning_program(task), task, descriptor=np.ones(4, dtype=np.float32) / 2, now=0.0)
    assert all(v == [1.0, 1.0] for v in program.methods[0].policy.values())
    assert len(program.methods[0].policy) == 12
    assert exp.guidance == "" and not exp.priors


def test_split_budget():
    assert split_budget(128, 3) == [43, 43, 42]
    assert split_budget(2, 3) == [1, 1]
    assert sum(split_budget(97, 4)) == 97


def test_learning_program_keeps_the_label_balance_unless_told_otherwise(tiny_task_spec):
    """`generate --store` starts from learning_program(task): it must balance labels like `generate`;
    the stream's rounds pass KeepAll (they balance at their own selection)."""
    from streamsynth.learn.learner import learning_program
    from streamsynth.quality import KeepAll, LabelBalance
    from streamsynth.task import load_task

    task = load_task(tiny_task_spec)
    assert isinstance(learning_program(task).selector, LabelBalance)
    assert isinstance(learning_program(task, selector=KeepAll()).selector, KeepAll)
