"""Running a synthesis program: cache, budget, engine and the run loop."""

from streamsynth.runtime.budget import BudgetMeter, Prices
from streamsynth.runtime.cache import ResponseCache
from streamsynth.runtime.engine import Engine

__all__ = sorted(["BudgetMeter", "Engine", "Prices", "ResponseCache"])
