"""The strategy protocol: ``propose`` requests, ``parse`` answers into samples.

A strategy is one way of writing data (attribute-conditioned new examples, answer augmentation,
question rephrase, ...). It is a plain object of the synthesis program: its tunable choices live
in its constructor arguments and ``state()``, so a learner can read and replace them without
touching the code that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from streamsynth.records import Completion, CompletionRequest, Cost, Provenance, Sample
from streamsynth.task import Task


@dataclass(frozen=True, slots=True)
class Proposal:
    """A request together with the choices that shaped it (credited when feedback comes)."""

    request: CompletionRequest
    strategy: str
    pattern: str
    conditioning: Mapping[str, Any] = field(default_factory=dict)
    seed_example_ids: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()

    def provenance(self, model_id: str) -> Provenance:
        return Provenance(
            strategy=self.strategy,
            pattern=self.pattern,
            prompt_fingerprint=self.request.prompt_fingerprint(),
            request_fingerprint=self.request.cache_key(model_id)[:16],
            model=model_id,
            seed=self.request.seed,
            sample_index=self.request.sample_index,
            conditioning=dict(self.conditioning),
            seed_example_ids=self.seed_example_ids,
            parents=self.parents,
        )


@runtime_checkable
class Strategy(Protocol):
    name: str

    async def prepare(self, task: Task, engine: Any, *, seed: int) -> None:
        """One-time work per task before proposing (e.g. asking the model for attributes)."""
        ...

    def propose(self, task: Task, indices: Sequence[int], *, seed: int) -> list[Proposal]:
        """One proposal per sample index; the same (task, index, seed) gives the same proposal."""
        ...

    def parse(self, task: Task, proposal: Proposal, completion: Completion, *, model_id: str, cost: Cost) -> Sample:
        """Turn an answer into a sample; a sample that cannot be parsed comes back rejected."""
        ...

    def state(self) -> dict[str, Any]:
        """The strategy's tunable choices, JSON-able (for manifests and learners)."""
        ...


def sample_id(task: Task, proposal: Proposal) -> str:
    return f"{task.name}-{proposal.strategy}-{proposal.request.seed}-{proposal.request.sample_index}"


def base_sample(task: Task, proposal: Proposal, completion: Completion, *, model_id: str, cost: Cost) -> Sample:
    """A sample with provenance and cost but no content yet (strategies fill it in)."""
    return Sample(
        id=sample_id(task, proposal),
        task=task.name,
        inputs={},
        output="",
        provenance=proposal.provenance(model_id),
        raw_text=completion.text,
        cost=cost,
    )
