"""The method protocol: ``plan`` one item, then ``run`` it with a model handle.

A method is one way of writing data (attribute-conditioned new examples, self-consistency with a
vote, self-refine, ...). It turns one planned item into samples and may make any number of model
calls:

- ``plan(task, index, seed) -> Item`` is pure: the label, attributes, demonstrations and pattern
  of the item, and the most calls it may make (budget is reserved for that many before it starts).
- ``async run(item, lm) -> list[Sample]``: ``lm`` is bound to the item; every call through it is
  keyed by (item, step, k), served from the cache when it can be, and recorded as a step of the
  sample's provenance. A reply that cannot be used gives a rejected sample with its reason.
- ``async prepare(task, lm)`` (optional): one-time work per task before any item (e.g. asking the
  model for attributes). What it learns goes into fitted fields ending in ``_``; its
  configuration never changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, runtime_checkable

from streamsynth.records import Completion, Example, GenerationParams, Message, Provenance, Sample

if TYPE_CHECKING:
    from streamsynth.runtime.lm import ItemLM
    from streamsynth.task import Task


@dataclass(frozen=True, slots=True)
class Item:
    """One planned unit of work: what a method will write, and the most calls it may make."""

    task: "Task" = field(repr=False, compare=False)
    index: int
    seed: int
    method: str
    pattern: str
    max_calls: int = 1
    label: str | None = None
    #: the most samples ``run`` returns for it (the run reserves the model checks' calls for each)
    max_samples: int = 1
    attributes: Mapping[str, str] = field(default_factory=dict)
    demonstrations: tuple[Example, ...] = ()
    params: GenerationParams = GenerationParams()
    conditioning: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.task.name}-{self.method}-{self.seed}-{self.index}"


@runtime_checkable
class Method(Protocol):
    name: str

    def plan(self, task: "Task", index: int, seed: int) -> Item:
        """The item for ``index``; the same (task, index, seed) always gives the same item."""
        ...

    async def run(self, item: Item, lm: "ItemLM") -> list[Sample]:
        """Write the item's samples (rejected ones carry their reason)."""
        ...


def new_sample(item: Item, lm: "ItemLM", *, inputs: Mapping[str, str], output: str, raw_text: str = "",
               k: int = 0, parents: Sequence[str] = ()) -> Sample:
    """A sample of ``item`` with full provenance: its pattern, conditioning and every step so far."""
    steps = tuple(lm.steps)
    first = steps[0] if steps else None
    prov = Provenance(
        strategy=item.method,
        pattern=item.pattern,
        prompt_fingerprint=lm.prompt_fingerprint or "",
        request_fingerprint=first.request_fingerprint if first else "",
        model=lm.model_id,
        seed=item.seed,
        sample_index=item.index,
        conditioning=dict(item.conditioning),
        seed_example_ids=tuple(e.id for e in item.demonstrations),
        parents=tuple(parents),
        steps=steps,
    )
    sid = item.id if k == 0 else f"{item.id}-{k}"
    return Sample(id=sid, task=item.task.name, inputs=dict(inputs), output=output, provenance=prov,
                  raw_text=raw_text, cost=lm.cost)


def failed_sample(item: Item, lm: "ItemLM", completion: Completion, *, field_name: str) -> Sample:
    """The sample of an item whose model call failed for good: rejected as ``backend_error``."""
    s = new_sample(item, lm, inputs={field_name: ""}, output=item.label or "", raw_text=completion.text)
    return s.reject("backend_error", completion.error or "unknown error")


def user(text: str) -> tuple[Message, ...]:
    return (Message("user", text),)
