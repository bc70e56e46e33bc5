"""The method library: strategies that write data. Each has ``propose`` and ``parse``."""

from streamsynth.methods.attributed import AttributeConditionedStrategy, propose_attributes, render_messages
from streamsynth.methods.base import Proposal, Strategy

__all__ = sorted(["AttributeConditionedStrategy", "Proposal", "Strategy", "propose_attributes", "render_messages"])
