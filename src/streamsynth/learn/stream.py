"""The stream: tasks one after another, each planned, generated, scored, learned from.

For each task in turn:

1. **start from experience** — ``SynLearner.fit`` gives the program priors over synthesis patterns
   from similar earlier tasks, guidance from retrieved lessons and exemplars of the same task;
2. **generate in rounds** — the budget is split into rounds; each round is an engine run (journal,
   cache, crash-safe) of the program, and after it every sample gets a reward (label agreement,
   quality, set diversity) and ``partial_fit`` moves the pattern policy towards what earned it;
3. **select** — quality-weighted maximal marginal relevance ranks the accepted samples, and the
   dev utility gate keeps the prefix that helps the benchmark student most on dev data (cross-
   validation over the seeds when there is no dev split) — none when nothing helps;
4. **remember** — rewards per pattern, the task descriptor, lessons and exemplars go into the store,
   which is snapshotted per task; with ``weights`` learning, a LoRA adapter of the local
   synthesizer is trained on the high-reward samples and carried to the next task.

An interrupted stream resumes from the last finished task (``stream.json`` in the output folder;
the store is rolled back to that task's snapshot), and inside a task from the rounds' journals.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamsynth.errors import ConfigError, SpecError
from streamsynth.fingerprint import derive_seed, fingerprint
from streamsynth.learn.credit import CREDIT_SHRINK
from streamsynth.learn.feedback import GATE_CONFIDENCE_Z, GATE_FRACTIONS, GATE_MIN_GAIN
from streamsynth.learn.learner import SynLearner, descriptor_text, learning_program, task_key
from streamsynth.learn.patterns import DEFAULT_SPACE, DRAWS, check_space, custom_space
from streamsynth.learn.reflect import LessonDraft, model_reflection, reflect
from streamsynth.output.writer import write_run, write_text_atomic
from streamsynth.program import GENERATED_KINDS
from streamsynth.quality.clean import normalize_for_dedup
from streamsynth.quality.select import KeepAll, LabelBalance
from streamsynth.records import Cost, Sample
from streamsynth.runtime.runner import RunResult, RunStats
from streamsynth.task import Task, load_task


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewardSpec(_Strict):
    """Weights of the per-sample reward; they are normalized to sum to 1, so only their ratio counts."""

    label: float = Field(0.4, ge=0)
    quality: float = Field(0.3, ge=0)
    diversity: float = Field(0.3, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> "RewardSpec":
        if self.label + self.quality + self.diversity <= 0:
            raise ValueError("the weights label, quality and diversity are all 0; give at least one a positive weight")
        return self


class SelectionSpec(_Strict):
    balance: float = Field(0.7, ge=0, le=1, description="1: reward only; 0: diversity only")
    min_gain: float = Field(GATE_MIN_GAIN, ge=0, description="dev accuracy the synthetic set must add over seeds alone")
    fractions: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        list(GATE_FRACTIONS), min_length=1, description="prefixes of the ranked candidates the gate tries (0: seeds alone)")
    confidence_z: float = Field(GATE_CONFIDENCE_Z, ge=0, description="the gain must also exceed this many standard errors")
    cv_repeats: int = Field(5, ge=1, le=50, description="without a dev split: repeats of the seed cross-validation")


class CreditSpec(_Strict):
    weight: float = Field(1.0, ge=0, allow_inf_nan=False,
                          description="scale of the leave-part-out utility credit added to rewards; 0: off")
    max_shift: float = Field(0.5, ge=0, le=1, description="the most a sample's reward moves by credit")
    min_part: int = Field(3, ge=1, description="pattern parts with fewer accepted samples are not credited")
    shrink: float = Field(CREDIT_SHRINK, ge=0, allow_inf_nan=False,
                          description="a part's value is scaled by n / (n + shrink): small parts count less; 0: no shrinkage")


class WeightsSpec(_Strict):
    min_reward: float = Field(0.6, ge=0, le=1)
    sft_epochs: int = Field(2, ge=1)
    grpo_steps: int = Field(4, ge=0)


class PatternsSpec(_Strict):
    """The pattern space the explorer samples from (learn/patterns.py); ``guided`` joins the
    templates by itself when earlier tasks left lessons."""

    templates: list[str] = Field(default_factory=lambda: list(DEFAULT_SPACE["templates"]))
    shots: list[int] = Field(default_factory=lambda: list(DEFAULT_SPACE["shots"]))
    temperatures: list[float] = Field(default_factory=lambda: list(DEFAULT_SPACE["temperatures"]))

    @model_validator(mode="after")
    def _valid(self) -> "PatternsSpec":
        try:
            check_space(self.model_dump())
        except ConfigError as exc:
            raise ValueError(str(exc).replace("patterns.", "")) from None
        return self

    def space(self) -> dict[str, list[Any]] | None:
        """The space for ``ExploringStrategy``; ``None`` when it is the default."""
        return custom_space(self.model_dump())


class StreamSpec(_Strict):
    tasks: list[str] = Field(..., min_length=1)
    budget: int = Field(128, ge=4, description="synthesizer queries per task")
    store: str = Field("experience.sqlite", description="the experience store (SQLite file), relative to this file")
    learning: list[Literal["explicit", "weights"]] = Field(default_factory=lambda: ["explicit"])
    rounds: int = Field(3, ge=1, le=16)
    draw: Literal["joint", "factored"] = Field(
        "joint", description="pattern policy: one Thompson arm per pattern (joint) or per pattern part (factored)")
    seed: int = 0
    reflect_with_model: bool = True
    patterns: PatternsSpec = PatternsSpec()
    reward: RewardSpec = RewardSpec()
    credit: CreditSpec = CreditSpec()
    selection: SelectionSpec = SelectionSpec()
    weights: WeightsSpec = WeightsSpec()


@dataclass(frozen=True)
class Stream:
    spec: StreamSpec
    task_paths: tuple[Path, ...]
    store_path: Path
    source: str

    @property
    def fingerprint(self) -> str:
        spec = self.spec.model_dump()
        if self.spec.credit == CreditSpec():
            del spec["credit"]  # streams written before credit existed still resume
        elif self.spec.credit.shrink == CREDIT_SHRINK:
            del spec["credit"]["shrink"]  # ... and those with credit settings written before shrinkage
        if self.spec.draw == "joint":
            del spec["draw"]  # ... and before the factored draw
        if self.spec.patterns.space() is None:
            del spec["patterns"]  # ... and before the pattern space was configurable
        return fingerprint({"spec": spec, "tasks": [str(p) for p in self.task_paths]})


def load_stream(path: str | Path, **overrides: Any) -> Stream:
    """Read a stream file: task specs in order (paths relative to the file), budget, store, learning."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"stream file {path} not found; give the path of a stream YAML such as examples/stream.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 (some editors and shells "
                        "write UTF-16 by default)") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path} must be a mapping with 'tasks', 'budget', 'store' and 'learning'")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        spec = StreamSpec.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        raise SpecError(f"{path}: {where}: {e['msg']}") from None
    base = path.resolve().parent
    paths = tuple((base / t).resolve() for t in spec.tasks)
    missing = [str(t) for t, p in zip(spec.tasks, paths) if not p.is_file()]
    if missing:
        raise SpecError(f"{path}: task spec {missing[0]} not found (paths are relative to the stream file)")
    store = Path(spec.store)
    store = store if store.is_absolute() else base / store
    return Stream(spec, paths, store, str(path))


@dataclass
class TaskOutcome:
    """What one task of the stream did: printed per task and kept in ``stream.json``."""

    task: str
    position: int
    calls: int
    samples: int
    kept: int
    mean_reward: float
    mean_label: float
    mean_quality: float
    diversity: float
    distinct_2: float
    utility: dict[str, Any]
    experience: dict[str, Any]
    patterns: dict[str, Any]
    wall_s: float
    out_dir: str
    adapter: dict[str, Any] | None = None
    weights_s: float = 0.0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class LearningContext:
    """What a task's run needs besides the task: the learner, rewards, selection and the gate."""

    learner: SynLearner
    reward: Any
    selector: Any
    utility: Any
    embedder: Any
    rounds: int = 3
    #: a PatternCredit (learn/credit.py), or None: pattern rewards are the per-sample rewards alone
    credit: Any = None
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    reflect_with_model: bool = True
    #: how the explorer draws patterns: "joint" or "factored" (learn/patterns.py)
    draw: str = "joint"
    #: the pattern space the explorer samples from (``None``: the default)
    space: Mapping[str, Sequence[Any]] | None = None


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def split_budget(budget: int, rounds: int) -> list[int]:
    rounds = max(1, min(rounds, budget))
    base, extra = divmod(budget, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def _dedup(samples: Sequence[Sample], fields: Sequence[str]) -> tuple[list[Sample], list[Sample]]:
    """Accepted samples without exact (normalised) repeats across rounds, first one kept."""
    seen: dict[str, str] = {}
    keep, drop = [], []
    for s in samples:
        key = normalize_for_dedup(" ".join(s.inputs.get(f, "") for f in fields))
        if key in seen:
            drop.append(s.reject("duplicate", f"same text as {seen[key]} (an earlier round)"))
        else:
            seen[key] = s.id
            keep.append(s)
    return keep, drop


async def run_learning_task(
    task: Task,
    backend: Any,
    ctx: LearningContext,
    *,
    budget: int,
    seed: int,
    out_dir: Path,
    cache: Any = None,
    now: float = 0.0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    position: int = 0,
) -> tuple[TaskOutcome, dict[str, Any]]:
    """One task with learning: experience in, rounds with feedback, selection and the gate, remember."""
    from streamsynth.api import agenerate
    from streamsynth.learn.feedback import SetDiversity, with_feedback
    from streamsynth.runtime import BudgetMeter, Engine
    from streamsynth.runtime.lm import ItemLM

    t0 = time.perf_counter()
    emit = on_event or (lambda e: None)
    descriptor = ctx.embedder.encode([descriptor_text(task)])[0]
    # the rounds keep every accepted sample: the stream balances labels itself at the end (its
    # selector takes turns over the labels, the label cap trims the most frequent, the dev gate
    # cuts the ranked list), and a sample dropped inside a round would earn its pattern no reward
    start = learning_program(task, embedder=ctx.embedder, selector=KeepAll(), draw=ctx.draw, space=ctx.space)
    program, experience = ctx.learner.fit(start, task, descriptor=descriptor, now=now)
    emit({"event": "experience", "task": task.name, **experience.summary()})
    reflect_calls = 1 if ctx.reflect_with_model and budget > ctx.rounds + 1 else 0
    all_samples: list[Sample] = []
    rewards: dict[str, float] = {}
    parts: dict[str, dict[str, float]] = {}
    rounds: list[tuple[int, Any]] = []
    feedback_all: dict[str, Any] = {}
    credited: dict[str, float] = {}  # rewards with the patterns' utility credit: what the policy and store see
    credits: list[dict[str, Any]] = []
    usage: list[Cost] = []  # what each round (and the reflection) spent: queries are its calls and cache hits
    generated = 0
    policy_start = dict(program.methods[0].policy)
    for r, b in enumerate(split_budget(budget - reflect_calls, ctx.rounds)):
        round_seed = derive_seed(seed, "round", r)
        rounds.append((round_seed, program))
        report = await agenerate(task, backend, budget=b, out=out_dir / "rounds" / f"r{r}", seed=round_seed,
                                 cache=cache, program=program)
        res = report.result
        if res.stopped_reason == "interrupted":
            # the engine turned a cancellation (Ctrl-C) into a stop and kept the round's journal: the
            # task is not done, so nothing is scored, remembered or marked; a rerun resumes the round
            raise asyncio.CancelledError("the stream was interrupted")
        st = res.stats
        usage.append(Cost(st.calls, st.cached_calls, st.tokens - st.completion_tokens, st.completion_tokens))
        generated += st.generated_tokens
        new = list(res.accepted) + list(res.rejected)
        scored = list(res.accepted)
        round_rewards: dict[str, list[float]] = {}
        ranked_parts: list[tuple[str, float]] = []
        if scored:
            # rewards are computed over everything accepted so far, so diversity is set-level
            pool = [s for s in all_samples if s.accepted] + scored
            feedback = ctx.reward.score(pool, task)
            feedback_all.update({fb.sample_id: fb for fb in feedback})
            for fb in feedback:
                rewards[fb.sample_id] = float(fb.reward)
                parts[fb.sample_id] = {"label": float(fb.label), "quality": float(fb.quality), "diversity": float(fb.diversity)}
            if ctx.credit is not None:
                # what each pattern part's samples do to the student on dev data (or seed CV)
                found = ctx.credit.credit(task, pool)
                credited.update(found.apply({s.id: rewards[s.id] for s in pool}))
                if found.parts:
                    credits.append({"round": r, **found.summary()})
                ranked_parts = sorted(((p, c.value) for p, c in found.parts.items()), key=lambda pv: (-pv[1], pv[0]))
        for s in new:
            rewards.setdefault(s.id, 0.0)  # a rejected sample earned nothing for its pattern
            round_rewards.setdefault(s.provenance.pattern, []).append(credited.get(s.id, rewards[s.id]))
        all_samples += new
        program = ctx.learner.partial_fit(program, round_rewards)
        emit({"event": "round", "task": task.name, "round": r, "calls": res.stats.queries, "accepted": len(res.accepted),
              "mean_reward": _mean([rewards[s.id] for s in new]),
              "credit": {"best": ranked_parts[0], "worst": ranked_parts[-1]} if ranked_parts else None})
    # -- select: rank by quality-weighted MMR, then keep the prefix that helps on dev -------------
    accepted = with_feedback([s for s in all_samples if s.accepted], list(feedback_all.values()))
    accepted, dups = _dedup(accepted, task.input_fields)
    ranked = ctx.selector.select(accepted, task, seed=seed)
    ranked_ids = {s.id for s in ranked}
    unranked = [s.reject("selection", "not ranked by the selector") for s in accepted if s.id not in ranked_ids]
    ranked, over = _cap_labels(ranked, task, seed)
    choice = ctx.utility.best_prefix(task, ranked, fractions=tuple(ctx.selection.fractions), min_gain=ctx.selection.min_gain,
                                     confidence_z=ctx.selection.confidence_z)
    kept = list(ranked[: choice.keep])
    rejected = [s for s in all_samples if not s.accepted] + dups + unranked + over
    gate_reason = (f"dev utility gate: keeping {choice.keep} of {len(ranked)} ranked samples; {choice.reason}")
    rejected += [s.reject("utility_gate", gate_reason) for s in ranked[choice.keep:]]
    # -- reflect and remember --------------------------------------------------------------------
    reflection = None
    if reflect_calls:
        meter = BudgetMeter(reflect_calls)
        engine = Engine(backend, meter, cache)
        try:
            lm = ItemLM(engine, index=-100, seed=derive_seed(seed, "reflect"), max_calls=reflect_calls)
            by_reward = sorted((s for s in all_samples if s.accepted), key=lambda s: (-rewards[s.id], s.id))
            text = lambda s: " / ".join(s.inputs.get(f, "") for f in task.input_fields)  # noqa: E731
            reflection = await model_reflection(task, lm, [text(s) for s in by_reward[:3]], [text(s) for s in by_reward[-3:]])
            usage.append(meter.cost)
            generated += meter.generated_tokens
        finally:
            await engine.aclose()
    earned = {s.id: credited.get(s.id, rewards[s.id]) for s in all_samples}  # what each sample's pattern earned
    # the lessons name patterns by what they earned (credit included), as the policy and the store see them
    lessons = reflect(task.name, all_samples, earned, parts=parts)
    if reflection:
        lessons.append(LessonDraft(f"Reflection on {task.name}: {reflection}", importance=2.0, kind="reflection"))
    ctx.learner.remember(task, descriptor, all_samples, rewards, now=now, lessons=lessons, embed=ctx.embedder.encode,
                         kept=kept, meta={"utility": dataclasses.asdict(choice)}, pattern_rewards=earned)
    # -- report and write ------------------------------------------------------------------------
    div = SetDiversity(embedder=ctx.embedder).summary(kept, task) if kept else {}
    by_pattern: dict[str, list[float]] = {}
    for s in all_samples:
        by_pattern.setdefault(s.provenance.pattern, []).append(earned[s.id])
    helped = choice.keep > 0
    spent = sum(usage, Cost())  # fresh calls and cache hits apart (no prices are given: no dollars)
    message = (f"kept {choice.keep} synthetic samples: they raised dev utility from {choice.seed_only:.3f} to "
               f"{choice.scores.get(choice.keep, choice.seed_only):.3f}" if helped else
               f"kept no synthetic samples: none of the candidate sets beat the seeds alone on dev data "
               f"({choice.seed_only:.3f}); {choice.reason}")
    outcome = TaskOutcome(
        task=task.name, position=position, calls=spent.calls + spent.cached_calls, samples=len(all_samples), kept=len(kept),
        mean_reward=_mean([rewards.get(s.id, 0.0) for s in all_samples]),
        mean_label=_mean([parts[s.id]["label"] for s in kept if s.id in parts]),
        mean_quality=_mean([parts[s.id]["quality"] for s in kept if s.id in parts]),
        diversity=float(div.get("density_diversity", 0.0)), distinct_2=float(div.get("distinct_2", 0.0)),
        utility={"method": "dev" if task.dev else "cv", "seed_only": choice.seed_only, "kept": choice.keep,
                 "scores": {str(k): v for k, v in choice.scores.items()}, "helped": helped},
        experience=experience.summary(),
        patterns={p: {"n": len(v), "mean_reward": round(_mean(v), 4)} for p, v in sorted(by_pattern.items())},
        wall_s=time.perf_counter() - t0, out_dir=str(out_dir), message=message,
    )
    stats = RunStats(accepted=len(kept), rejected=len(rejected), queries=outcome.calls, calls=spent.calls,
                     cached_calls=spent.cached_calls, tokens=spent.tokens, completion_tokens=spent.completion_tokens,
                     budget=budget, elapsed_s=outcome.wall_s, generated_tokens=generated)
    result = RunResult(task=task, accepted=kept, rejected=rejected, stopped_reason="budget", wall_s=outcome.wall_s,
                       stats=stats, program_state=program.dump_state(), items=len(all_samples))
    from streamsynth.output import build_manifest

    manifest = build_manifest(result, config={"model": backend.model_id, "budget": budget, "learning": "stream"},
                              run_fingerprint=fingerprint({"task": task.fingerprint, "seed": seed, "budget": budget}), seed=seed)
    label_cap = ({"max_label_ratio": task.generation.max_label_ratio, "capped": len(over)}
                 if task.kind == "classification" else None)
    manifest["learning"] = {"experience": experience.summary(), "policy_start": policy_start,
                            "policy_end": program.methods[0].policy, "patterns": outcome.patterns,
                            "utility": outcome.utility, "credit": credits, "label_cap": label_cap,
                            "message": message, "lessons_written": [x.text for x in lessons]}
    write_run(out_dir, result, manifest)
    emit({"event": "task_done", **outcome.to_dict()})
    extras = {"rounds": rounds, "kept": kept, "rewards": rewards, "all": all_samples}
    return outcome, extras


def _cap_labels(ranked: list[Sample], task: Task, seed: int) -> tuple[list[Sample], list[Sample]]:
    """``ranked`` capped as generate caps its data set (``generation.max_label_ratio``, seeds counted;
    each label keeps its best-rewarded, in ranked order), and the samples the cap took out, rejected
    with its reason. The selector takes turns over the labels, but once the rarest runs out the
    ranking is one-sided, and a gate that keeps it skews the student's prior. Classification only."""
    if task.kind != "classification":
        return ranked, []
    balance = LabelBalance(task.generation.max_label_ratio)
    capped = balance.select(ranked, task, seed=seed)
    capped_ids = {s.id for s in capped}
    over = [s for s in ranked if s.id not in capped_ids]
    return capped, [s.reject("selection", why) for s, why in zip(over, balance.explain(over, task, ranked))]


def _progress_path(out: Path) -> Path:
    return out / "stream.json"


@dataclass(frozen=True)
class Progress:
    """What ``stream.json`` holds: the tasks done, and the run's id and clock.

    ``run`` names the store's snapshots (``RUN-N``: the store before task N+1), so a resume restores
    only snapshots this folder's run took, never another run's; ``clock`` is the store's time when
    the run began (lessons are stamped ``clock + position``, so they are newer than the store's)."""

    run: str
    clock: float
    done: list[dict[str, Any]]
    #: written by a version without run ids (its snapshots are named after the stream's fingerprint)
    legacy: bool = False


_OUTCOME_FIELDS = {f.name for f in dataclasses.fields(TaskOutcome)}
_OUTCOME_REQUIRED = {f.name for f in dataclasses.fields(TaskOutcome)
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


def _read_progress(out: Path, stream_fp: str) -> Progress | None:
    p = _progress_path(out)
    if not p.is_file():
        return None
    fix = f"choose another --out folder (or remove {out} as a whole to run the stream again from its first task)"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read {p} ({exc}); {fix}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p} is not a stream's progress file (a JSON object); {fix}")
    if data.get("stream_fingerprint") != stream_fp:
        raise ConfigError(f"{out} holds a different stream (other tasks, budget or settings); choose another --out folder")
    done = data.get("done", [])
    if not (isinstance(done, list) and all(isinstance(d, dict) and _OUTCOME_REQUIRED <= set(d) <= _OUTCOME_FIELDS
                                           for d in done)):
        raise ConfigError(f"{p}: 'done' is not a list of finished tasks as this version writes them; {fix}")
    clock = data.get("clock", 0.0)
    if isinstance(clock, bool) or not isinstance(clock, (int, float)):
        raise ConfigError(f"{p}: 'clock' must be a number; {fix}")
    # progress files from before run ids named their snapshots after the stream's fingerprint
    return Progress(run=str(data.get("run") or stream_fp[:10]), clock=float(clock), done=list(done),
                    legacy="run" not in data)


#: the store's state key naming the stream run that snapshotted it last (see ``_mark_and_snapshot``)
HEAD_STATE = "head"


def _mark_and_snapshot(store: Any, run: str, tasks_done: int) -> None:
    """Snapshot the store as ``RUN-N``, marked with the run that took it: a resumed run rolls the store
    back only while that mark is its own (no other run has written to the store since)."""
    store.put_state(HEAD_STATE, {"run": run, "tasks_done": tasks_done})
    store.snapshot(f"{run}-{tasks_done}")


def _write_progress(out: Path, stream_fp: str, progress: Progress) -> None:
    write_text_atomic(_progress_path(out), json.dumps(
        {"stream_fingerprint": stream_fp, "run": progress.run, "clock": progress.clock, "done": progress.done}, indent=2))


async def arun_stream(
    stream: Stream,
    *,
    out: Path,
    make_backend: Callable[[Any], Any],
    cache: Any = None,
    embedder: Any = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    tasks: Sequence[Task] | None = None,
    train_last: bool = True,
) -> list[TaskOutcome]:
    """Run every task of ``stream`` in order, learning as configured; resumes a stopped stream.

    ``train_last=False`` skips the weight fit after the last task: a benchmark that scores only the
    data sets needs no adapter that no later task of the run uses (a user's stream keeps it, for the
    next stream or ``generate`` that starts from this store).
    """
    from streamsynth.learn.credit import PatternCredit
    from streamsynth.learn.feedback import DevUtility, Reward
    from streamsynth.learn.store import ExperienceStore
    from streamsynth.quality.select import MMRSelector
    from streamsynth.runtime.memory import release_memory

    spec = stream.spec
    emit = on_event or (lambda e: None)
    sfp = stream.fingerprint
    progress = _read_progress(out, sfp)
    if embedder is None:
        from streamsynth.eval.embedder import Embedder

        embedder = Embedder()
    task_list = list(tasks) if tasks is not None else [load_task(p) for p in stream.task_paths]
    # what would stop the stream after a task's budget is spent is checked before anything is written
    checker = DevUtility(embedder=embedder, seed=spec.seed, repeats=spec.selection.cv_repeats)
    start = len(progress.done) if progress else 0
    for path, task in zip(list(stream.task_paths)[start:], task_list[start:], strict=True):
        if task.kind not in GENERATED_KINDS:
            raise ConfigError(f"{path}: task {task.name!r} is of kind {task.kind!r}; a stream learns over "
                              f"{' and '.join(GENERATED_KINDS)} tasks only (this version generates no other kind): "
                              "remove it from the stream file's tasks")
        checker.check(task)
        if "weights" in spec.learning and task.kind != "classification":
            # the adapter learns single-text completions (its targets and the GRPO reward read one field)
            raise ConfigError(f"{path}: task {task.name!r} is of kind {task.kind!r}; 'weights' learning trains on "
                              "single-text classification tasks only: remove 'weights' from learning, or the task "
                              "from the stream file's tasks")
    if "weights" in spec.learning:
        from streamsynth.learn.weights import require_extra

        require_extra("peft", *(("trl", "datasets") if spec.weights.grpo_steps > 0 else ()))
    out.mkdir(parents=True, exist_ok=True)
    explicit = "explicit" in spec.learning
    store = ExperienceStore(stream.store_path) if explicit or "weights" in spec.learning else None
    outcomes: list[TaskOutcome] = []
    try:
        if progress is None:  # a fresh run: its own id, so no other run's snapshot is ever restored
            progress = Progress(run=f"{sfp[:6]}-{uuid.uuid4().hex[:8]}",
                                clock=store.next_time() if store is not None else 0.0, done=[])
            _write_progress(out, sfp, progress)
        elif progress.legacy:
            emit({"event": "note", "task": "", "text": f"resuming a stream an older version began in {out}: the tasks "
                  "still to do run with this version's defaults"})
        done = progress.done
        snap = f"{progress.run}-{len(done)}"
        if store is not None:
            head = store.get_state(HEAD_STATE)
            if snap not in store.snapshots():
                _mark_and_snapshot(store, progress.run, len(done))
            elif head is None or head.get("run") == progress.run:
                store.restore(snap)  # roll back whatever an interrupted task had half written
            else:
                emit({"event": "note", "task": "", "text": f"another stream run ({head.get('run')}) wrote to "
                      f"{stream.store_path} since this one stopped; the store is not rolled back, so its experience stays"})
        adapter = None
        if done and done[-1].get("adapter"):
            from streamsynth.learn.weights import AdapterRef

            adapter = AdapterRef.from_dict(done[-1]["adapter"])
        for pos, task in enumerate(task_list):
            if pos < len(done):
                outcomes.append(TaskOutcome(**done[pos]))
                emit({"event": "task_resumed", **done[pos]})
                continue
            utility = DevUtility(embedder=embedder, seed=spec.seed, repeats=spec.selection.cv_repeats)
            ctx = LearningContext(
                learner=SynLearner(store if explicit else None), reward=Reward(spec.reward.model_dump(), embedder=embedder),
                selector=MMRSelector(balance=spec.selection.balance, embedder=embedder),
                utility=utility, embedder=embedder, rounds=spec.rounds,
                credit=PatternCredit(utility, **spec.credit.model_dump()) if spec.credit.weight > 0 else None,
                selection=spec.selection, reflect_with_model=spec.reflect_with_model, draw=spec.draw,
                space=spec.patterns.space(),
            )
            if adapter is None and not done and pos == 0 and "weights" in spec.learning and store is not None:
                # a fresh stream with weight learning goes on from the adapter an earlier run left in the store
                probe = make_backend(None)
                adapter, note = stored_adapter(store, probe)
                close = getattr(probe, "aclose", None)
                if close is not None:
                    await close()
                if note:
                    emit({"event": "note", "task": task.name, "text": note})
            backend = make_backend(adapter)
            emit({"event": "task_start", "task": task.name, "position": pos, "model": backend.model_id})
            try:
                outcome, extras = await run_learning_task(
                    task, backend, ctx, budget=spec.budget, seed=derive_seed(spec.seed, "task", task_key(task)),
                    out_dir=out / f"{pos + 1:02d}-{task.name}", cache=cache, now=progress.clock + pos, on_event=on_event,
                    position=pos,
                )
            finally:
                close = getattr(backend, "aclose", None)
                if close is not None:
                    await close()
                release_memory()  # the generation's caches, before the next fit or task loads a model
            if "weights" in spec.learning and (train_last or pos < len(task_list) - 1):
                t_w = time.perf_counter()
                adapter_dir = out / "adapters" / f"{pos + 1:02d}-{task.name}"
                start_path = getattr(adapter, "path", None)
                if adapter_dir.exists() and not (start_path is not None and Path(start_path).resolve() == adapter_dir.resolve()):
                    import shutil

                    shutil.rmtree(adapter_dir)  # a fit this run began before it was stopped: the task was redone
                adapter = await train_adapter(task, backend, ctx, extras, start=adapter, out_dir=adapter_dir,
                                              spec=spec.weights, seed=spec.seed)
                outcome.weights_s = time.perf_counter() - t_w
                outcome.adapter = adapter.to_dict() if adapter is not None else None
                if adapter is not None and store is not None:
                    remember_adapter(store, adapter, backend)
                emit({"event": "weights", "task": task.name, "seconds": outcome.weights_s,
                      "adapter": outcome.adapter})
            done.append(outcome.to_dict())
            if store is not None:
                if explicit:  # the policies this task left are over this space: `generate --store` explores it
                    remember_explorer(store, spec)
                _mark_and_snapshot(store, progress.run, pos + 1)
            _write_progress(out, sfp, progress)
            outcomes.append(outcome)
    finally:
        if store is not None:
            store.close()
    return outcomes


#: the store's state key for how the last stream explored: its draw and pattern space (see ``stored_explorer``)
EXPLORER_STATE = "explorer"


def remember_explorer(store: Any, spec: StreamSpec) -> None:
    """Keep the stream's draw and pattern space in the store: the policies it learned are over that
    space, so ``generate --store`` explores the same one."""
    store.put_state(EXPLORER_STATE, {"draw": spec.draw, "space": spec.patterns.space()})


def stored_explorer(store: Any) -> dict[str, Any]:
    """``learning_program`` keywords (``draw``, ``space``) of the last stream that wrote to ``store``;
    the defaults for a store from before streams recorded them. A value that is not valid is a
    ``ConfigError`` naming the store."""
    saved = store.get_state(EXPLORER_STATE) or {}
    draw, space = saved.get("draw", "joint"), saved.get("space")
    try:
        if draw not in DRAWS:
            raise ConfigError(f"draw {draw!r} is not one of {list(DRAWS)}")
        if space is not None and not isinstance(space, Mapping):
            raise ConfigError(f"the pattern space is a {type(space).__name__}, not a mapping")
        space = custom_space(space)
    except ConfigError as exc:
        raise ConfigError(f"{store.path}: the stream settings it holds are not valid ({exc}); "
                          "run `streamsynth stream` with this store again, or give another store") from None
    return {"draw": draw, "space": space}


def program_from_store(task: Task, store: Any, *, descriptor: Any) -> tuple[Any, Any, dict[str, Any]]:
    """What ``generate --store`` runs: the learning program for ``task`` fitted on the store's experience,
    exploring as the stream that wrote the store did. Returns ``(program, experience, explorer)``."""
    explorer = stored_explorer(store)
    now = store.next_time()  # the store's clock: its newest lessons count as the most recent
    program, experience = SynLearner(store).fit(learning_program(task, **explorer), task, descriptor=descriptor, now=now)
    return program, experience, explorer


#: the store's state key for the adapter the last weights fit left (see ``stored_adapter``)
ADAPTER_STATE = "adapter"


def base_model_of(backend: Any) -> str:
    """The id of ``backend``'s model weights (``local:NAME@DIGEST``), without the numerics or adapter it
    runs with (``+bfloat16``, ``+lora:…``): what a stored adapter must have been trained on."""
    return str(getattr(backend, "model_id", "")).split("+", 1)[0]


def remember_adapter(store: Any, adapter: Any, backend: Any) -> None:
    """Keep ``adapter`` in the store, so a later stream or ``generate --store`` starts from it."""
    ref = adapter.to_dict()
    if ref.get("path"):
        ref["path"] = str(Path(ref["path"]).resolve())  # found from any working folder
    store.put_state(ADAPTER_STATE, {"ref": ref, "base": base_model_of(backend)})


def stored_adapter(store: Any, backend: Any) -> tuple[Any, str]:
    """The adapter the store's last weights fit left, if it fits ``backend``'s model, and a line saying
    what was done: ``(AdapterRef or None, note)``; the note is empty when the store holds none."""
    from streamsynth.backends.local_hf import resolve_adapter
    from streamsynth.errors import StreamsynthError
    from streamsynth.learn.weights import AdapterRef

    saved = store.get_state(ADAPTER_STATE)
    if not saved:
        return None, ""
    base = base_model_of(backend)
    try:
        ref = AdapterRef.from_dict(saved["ref"])
        if saved.get("base") != base:
            return None, (f"the store's LoRA adapter was trained on {saved.get('base')}, not on this model ({base}); "
                          "starting from the base model")
        resolve_adapter(ref)  # the folder still holds the weights the store names
    except (StreamsynthError, KeyError, TypeError) as exc:
        return None, f"the store's LoRA adapter cannot be used ({exc}); starting from the base model"
    return ref, f"starting from the store's LoRA adapter {ref.path} (sha256 {ref.digest[:12]})"


async def train_adapter(task: Task, backend: Any, ctx: LearningContext, extras: Mapping[str, Any], *, start: Any,
                        out_dir: Path, spec: WeightsSpec, seed: int) -> Any:
    """LoRA SFT on the task's high-reward samples, then GRPO with the reward; returns the adapter."""
    from streamsynth.learn.weights import TrainingExample, WeightLearner

    base_folder = getattr(backend, "converted_dir", None)
    if base_folder is None:
        raise ConfigError("weights learning needs the local backend (a model on this machine); "
                          "remove 'weights' from learning for an API model")
    rewards = extras["rewards"]
    by_seed = {sd: prog for sd, prog in extras["rounds"]}
    examples = []
    prompts_meta = []
    for s in extras["all"]:
        program = by_seed.get(s.provenance.seed)
        if program is None or s.provenance.sample_index < 0:
            continue
        method = program.methods[0]
        item = method.plan(task, s.provenance.sample_index, s.provenance.seed)  # pure: the same prompt again
        msgs = method.messages(item)
        prompts_meta.append((msgs, item.label))
        text = s.inputs.get(task.input_fields[0], "") if s.accepted else ""
        if text:
            examples.append(TrainingExample(messages=msgs, completion=text, reward=float(rewards.get(s.id, 0.0))))
    learner = WeightLearner(min_reward=spec.min_reward, sft_epochs=spec.sft_epochs, grpo_steps=spec.grpo_steps, seed=seed)
    reward_fn = make_grpo_reward(task, ctx, prompts_meta)
    backend_dir = backend.converted_dir()
    stop = threading.Event()
    fit = asyncio.ensure_future(asyncio.to_thread(learner.fit, backend_dir, examples, reward_fn=reward_fn, start=start,
                                                  out_dir=out_dir, stop=stop))
    try:
        return await asyncio.shield(fit)
    except asyncio.CancelledError:
        # Ctrl-C: a thread cannot be cancelled, so ask the fit to end at its next optimizer step
        # and wait for that, instead of for the rest of the fit (the rerun redoes the task's fit)
        stop.set()
        await asyncio.wait({fit})
        raise


def make_grpo_reward(task: Task, ctx: LearningContext, prompts_meta: Sequence[tuple[Any, str | None]]) -> Callable[..., list[float]]:
    """The composite reward for completions of the synthesis prompts (label agreement and quality)."""
    labels_by_prompt = {json.dumps([m.to_dict() for m in msgs]): label for msgs, label in prompts_meta}

    def reward_fn(prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
        from streamsynth.learn.feedback import LabelAgreement, QualityReward
        from streamsynth.quality.clean import clean_text
        from streamsynth.records import Provenance

        samples = []
        for i, (p, c) in enumerate(zip(prompts, completions)):
            key = json.dumps([m.to_dict() for m in p]) if not isinstance(p, str) else p
            label = labels_by_prompt.get(key) or task.label_names[0]
            text = clean_text(c, labels=task.label_names).text
            prov = Provenance("grpo", "grpo", "", "", "", 0, i)
            samples.append(Sample(id=f"g{i}", task=task.name, inputs={task.input_fields[0]: text}, output=label, provenance=prov))
        la = LabelAgreement(embedder=ctx.embedder).score(samples, task)
        q = QualityReward().score(samples, task)
        return [float(0.5 * a + 0.5 * b) for a, b in zip(la, q)]

    return reward_fn
