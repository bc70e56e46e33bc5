"""Program state that a learner can read, change and load (dspy's dump_state/load_state,
scikit-learn's get_params).

A component (method, check, selector) keeps its configuration in constructor arguments stored
under the same names, and what it learns while running in fitted fields ending in ``_``.
``dump_state`` writes both as JSON-able data with the component's registered type name;
``load_state`` builds a new component from such data. Configuration alone (``config_state``) is
what a run's fingerprint covers: templates are data, so changing a template's text changes it.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, TypeVar

from streamsynth.errors import ConfigError

_REGISTRY: dict[str, type] = {}
T = TypeVar("T", bound=type)


def component(name: str) -> Callable[[T], T]:
    """Register a component class under ``name`` so ``load_state`` can build it from data."""

    def wrap(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"two components are registered as {name!r}: {_REGISTRY[name].__qualname__} and {cls.__qualname__}")
        _REGISTRY[name] = cls
        cls.component_type = name  # type: ignore[attr-defined]
        return cls

    return wrap


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "to_dict"):
        return v.to_dict()
    return v


class Stateful:
    """Mixin: ``get_params``, ``dump_state``, ``config_state`` and ``load_state`` for a component."""

    component_type: str = ""

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments, read back from the attributes of the same names."""
        sig = inspect.signature(type(self).__init__)
        return {
            name: getattr(self, name)
            for name, p in sig.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and hasattr(self, name)
        }

    def fitted_state(self) -> dict[str, Any]:
        """What the component learned while running (fields ending in ``_``)."""
        return {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}

    def config_state(self) -> dict[str, Any]:
        """Type and parameters as data (objects such as a loaded embedder are left out: not config)."""
        params = {k: _jsonable(v) for k, v in self.get_params().items() if _is_data(v)}
        return {"type": self.component_type or type(self).__name__, "params": params}

    def dump_state(self) -> dict[str, Any]:
        state = self.config_state()
        fitted = {k: _jsonable(v) for k, v in self.fitted_state().items() if v is not None and _is_data(v)}
        if fitted:
            state["fitted"] = fitted
        return state

    def clone(self, **changes: Any) -> Any:
        """A new, unfitted component with the same parameters, some of them changed."""
        return type(self)(**{**self.get_params(), **changes})


def _is_data(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, list, tuple, dict)) or hasattr(v, "to_dict")


def load_state(state: Mapping[str, Any]) -> Any:
    """Build a component from ``dump_state`` data (its fitted fields restored too)."""
    name = state.get("type")
    cls = _REGISTRY.get(name)  # type: ignore[arg-type]
    if cls is None:
        raise ConfigError(f"unknown component type {name!r} in program state; known: {sorted(_REGISTRY)}")
    params = dict(state.get("params") or {})
    restore = getattr(cls, "params_from_state", None)
    obj = cls(**(restore(params) if restore else params))
    fitted = state.get("fitted") or {}
    restore_fitted = getattr(obj, "restore_fitted", None)
    if restore_fitted is not None:
        restore_fitted(dict(fitted))
    else:
        for k, v in fitted.items():
            setattr(obj, k, v)
    return obj
