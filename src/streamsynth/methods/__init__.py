"""The method library: each method plans an item and runs it with a model handle."""

from streamsynth.methods.attributed import AttributeConditionedStrategy, propose_attributes, render_messages
from streamsynth.methods.base import Item, Method, failed_sample, new_sample
from streamsynth.methods.consistency import SelfConsistencyLabel

__all__ = sorted(
    ["AttributeConditionedStrategy", "Item", "Method", "SelfConsistencyLabel", "failed_sample", "new_sample",
     "propose_attributes", "render_messages"]
)
