"""The registry of pruning methods.

A method is a scoring function registered by name with its granularity ("weight" for
unstructured pruning, "channel" for filters and neurons). Selection and masking are shared, so a
new method is one function; every registered method is exercised by the contract tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxprune.errors import ConfigError

GRANULARITIES = ("weight", "channel")


@dataclass(frozen=True)
class ScoreContext:
    """What a scoring function may use besides the layer itself.

    Attributes:
        torch_model: the converted `onnxprune.convert.TorchModel`.
        data: training samples, for data-driven methods (Taylor); None for data-free ones.
        preprocess: how `data` becomes the model's input.
        options: method-specific settings (a dict), e.g. Taylor's batches per round.
    """

    torch_model: object
    data: object = None
    preprocess: object = None
    options: dict | None = None


@dataclass(frozen=True)
class Method:
    """A registered pruning method.

    Attributes:
        name: what --method takes.
        granularity: "weight" (unstructured) or "channel" (filters and neurons, compacted).
        score: score(entry, ctx) -> scores (lower goes first).
        summary: the first line of its docstring.
        needs_data: the method needs training data in its `ScoreContext`.
    """

    name: str
    granularity: str
    score: Callable[..., np.ndarray]
    summary: str
    needs_data: bool = False


_REGISTRY: dict[str, Method] = {}


def register(name: str, granularity: str, needs_data: bool = False) -> Callable:
    """Register a scoring function `score(entry, ctx) -> np.ndarray` under `name`.

    The function receives a `ParamEntry` and a `ScoreContext` and returns scores in the ONNX
    layout of the weight (granularity "weight") or one per output channel ("channel"). Lower
    scores are pruned first. Registering a name twice raises.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")

    def decorate(function: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"pruning method '{name}' is already registered")
        summary = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        _REGISTRY[name] = Method(name, granularity, function, summary, needs_data)
        return function

    return decorate


def get_method(name: str) -> Method:
    """The registered method called `name` (ConfigError listing the known ones otherwise)."""
    _load_builtin_methods()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown pruning method '{name}'; known methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_methods() -> list[Method]:
    """Every registered method, sorted by name."""
    _load_builtin_methods()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def _load_builtin_methods() -> None:
    from onnxprune.methods import greedy, magnitude, norms, slimming, sss, synflow, taylor  # noqa: F401  (they register)
