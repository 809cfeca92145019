"""From scores to masks: scopes, per-layer ratios, and the guard against layer collapse.

Selection is separate from scoring (Torch-Pruning's split): a method gives a score per weight (or
per channel), and this module decides which ones go. Everything here works on numpy float32
arrays; thresholds come from `np.partition` (linear time), never from a full sort.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from onnxprune.errors import ConfigError, UnreachableLevel
from onnxprune.options import DEFAULT_MAX_LAYER_SPARSITY, check_sparsity
from onnxprune.options import check_scope as check_scope_name

# scopes that rank weights of every layer together (the collapse guard applies)
GLOBAL_SCOPES = ("global", "lamp")
# scopes that share the sparsity out between layers (the cap of --max-layer-sparsity applies)
ALLOCATING_SCOPES = (*GLOBAL_SCOPES, "erk")


@dataclass(frozen=True)
class LayerPlan:
    """What selection decided for one layer.

    Attributes:
        name: layer name.
        ratio: fraction of the layer's scores removed.
        count: number of scores removed (exactly `round(ratio * n)` for pinned and layer-scope layers).
        capped: True when global selection wanted more than the per-layer cap allows.
    """

    name: str
    ratio: float
    count: int
    capped: bool = False


@dataclass(frozen=True)
class Selection:
    """Masks (True = keep) and the per-layer plan that produced them."""

    masks: dict[str, np.ndarray]
    plans: dict[str, LayerPlan]
    notes: tuple[str, ...] = field(default=())


def check_scope(scope: str, method: str, granularity: str) -> None:
    """Refuse an unknown scope, and a weight-sharing scope (lamp, erk) for a method that removes channels."""
    check_scope_name(scope)
    if granularity == "channel" and scope in ("lamp", "erk"):
        raise ConfigError(f"scope {scope} shares out single weights; {method} removes channels: use layer or global")


def read_ratios(path: str | os.PathLike, layer_names: list[str], aliases: dict[str, str]) -> tuple[dict, float | None]:
    """Read a per-layer ratio YAML.

    The file is a mapping from layer (node name or weight initializer name) to sparsity, with an
    optional `default` key for every layer not named::

        default: 0.8
        conv1: 0.5
        fc8_W: 0.0

    Args:
        path: the YAML file.
        layer_names: the valid layer names.
        aliases: other accepted names (weight initializer names) -> layer name.

    Returns:
        ({layer name: ratio}, default or None).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such ratio file")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; write 'layer_name: 0.5' lines") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping of layer names to sparsities, like 'conv1: 0.5'")
    default = content.pop("default", None)
    if default is not None:
        default = check_sparsity(default, f"{path}: default")
    ratios = {}
    for key, value in content.items():
        name = aliases.get(str(key), str(key))
        if name not in layer_names:
            raise ConfigError(f"{path}: unknown layer '{key}'; the prunable layers are: {', '.join(layer_names)}")
        ratios[name] = check_sparsity(value, f"{path}: sparsity of '{key}'")
    return ratios, default


def smallest(scores: np.ndarray, count: int) -> np.ndarray:
    """A keep-mask (True = keep) that drops exactly `count` of the lowest scores.

    Ties at the threshold are broken by position, so the count is exact even when many scores are
    equal (already-zero weights, for instance).
    """
    flat = scores.reshape(-1)
    keep = np.ones(flat.shape, dtype=bool)
    if count <= 0:
        return keep.reshape(scores.shape)
    if count >= flat.size:
        return np.zeros(scores.shape, dtype=bool)
    threshold = global_kth_smallest([flat], count)  # no full copy of a large layer
    below = flat < threshold
    keep[below] = False
    missing = count - int(below.sum())
    if missing > 0:
        ties = np.flatnonzero(flat == threshold)[:missing]
        keep[ties] = False
    return keep.reshape(scores.shape)


def select_layerwise(scores: dict[str, np.ndarray], ratios: dict[str, float]) -> dict[str, LayerPlan]:
    """Each layer loses `round(ratio * n)` of its scores."""
    return {name: LayerPlan(name, ratio, int(round(ratio * scores[name].size))) for name, ratio in ratios.items()}


def lamp_scores(scores: np.ndarray) -> np.ndarray:
    """LAMP scores of one layer (Lee et al., ICLR 2021): s_u^2 / sum of s_v^2 over v not below u.

    Layer-adaptive magnitude: each weight's squared score relative to the layer's survivors if
    every weight under it were gone. Scale-invariant per layer, so one global threshold over LAMP
    scores allots sparsity by how much each layer's output distorts, not by its weights' scale
    (a MATLAB model fed raw 0-255 pixels has a tiny first layer that global magnitude empties).
    The largest weight of every layer scores 1: no layer is ever emptied.
    """
    flat = np.square(scores.reshape(-1).astype(np.float64))
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    tail = np.cumsum(ordered[::-1])[::-1]  # sum over this weight and every larger one
    lamp = np.empty_like(flat)
    lamp[order] = np.divide(ordered, tail, out=np.zeros_like(ordered), where=tail > 0)
    return lamp.reshape(scores.shape)


def select_global(
    scores: dict[str, np.ndarray], sparsity: float, max_layer_sparsity: float = DEFAULT_MAX_LAYER_SPARSITY
) -> dict[str, LayerPlan]:
    """One threshold over all the given layers, with no layer pruned beyond `max_layer_sparsity`.

    Global magnitude pruning on a real network can remove a whole small layer (its weights are
    larger in count elsewhere), which disconnects the model. Layers that would pass the cap are
    held at the cap and the remaining budget is shared by one threshold over the others, until no
    layer exceeds it.
    """
    sizes = {name: array.size for name, array in scores.items()}
    total_target = int(round(sparsity * sum(sizes.values())))
    caps = {name: int(np.floor(max_layer_sparsity * size)) for name, size in sizes.items()}
    capped: dict[str, int] = {}
    while True:
        free = [name for name in scores if name not in capped]
        budget = total_target - sum(capped.values())
        counts = _global_counts({name: scores[name] for name in free}, budget)
        over = [name for name in free if counts[name] > caps[name]]
        if not over:
            break
        for name in over:
            capped[name] = caps[name]
        if len(capped) == len(scores):
            raise UnreachableLevel(
                f"global sparsity {sparsity} cannot be reached with no layer above {max_layer_sparsity:.0%}; "
                "lower the sparsity or raise --max-layer-sparsity"
            )
    plans = {}
    for name in scores:
        count = capped.get(name, counts.get(name, 0))
        plans[name] = LayerPlan(name, count / sizes[name] if sizes[name] else 0.0, count, name in capped)
    return plans


def erk_ratios(
    shapes: dict[str, tuple[int, ...]], sparsity: float, max_layer_sparsity: float = DEFAULT_MAX_LAYER_SPARSITY
) -> dict[str, float]:
    """Per-layer sparsities of the Erdos-Renyi-Kernel allocation (Evci et al., RigL, ICML 2020).

    A layer keeps a density proportional to (sum of its dimensions) / (product of them): large
    layers (many inputs times many outputs) are pruned hardest, small ones (the first convolution,
    the classifier) least. The factor is solved so that `sparsity` of all weights go; a layer the
    factor would make denser than dense stays dense, and one it would prune beyond
    `max_layer_sparsity` stays at that cap, the others sharing what is left.
    """
    sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    raw = {name: sum(shape) / sizes[name] for name, shape in shapes.items() if sizes[name]}
    kept_target = (1.0 - sparsity) * sum(sizes.values())
    fixed: dict[str, float] = {}  # layer -> density held at 1 or at the cap
    while True:
        free = [name for name in raw if name not in fixed]
        remaining = kept_target - sum(fixed[name] * sizes[name] for name in fixed)
        weight = sum(raw[name] * sizes[name] for name in free)
        if not free or weight <= 0:
            break
        factor = max(0.0, remaining) / weight
        dense = [name for name in free if factor * raw[name] > 1.0]
        floor = [name for name in free if factor * raw[name] < 1.0 - max_layer_sparsity]
        if not dense and not floor:
            break
        for name in dense or floor:  # densest first: fixing them changes the factor for the rest
            fixed[name] = 1.0 if dense else 1.0 - max_layer_sparsity
    density = {name: fixed.get(name, min(1.0, factor * raw.get(name, 0.0))) for name in shapes}
    return {name: float(np.clip(1.0 - value, 0.0, max_layer_sparsity)) for name, value in density.items()}


def plan_scope(
    scores: dict[str, np.ndarray],
    shapes: dict[str, tuple[int, ...]],
    scope: str,
    sparsity: float,
    max_layer_sparsity: float = DEFAULT_MAX_LAYER_SPARSITY,
) -> dict[str, LayerPlan]:
    """How many of each layer's scores go, for a scope: layer, global, lamp (scores already LAMP) or erk."""
    if scope in GLOBAL_SCOPES:
        return select_global(scores, sparsity, max_layer_sparsity)
    if scope == "erk":
        return select_layerwise(scores, erk_ratios(shapes, sparsity, max_layer_sparsity))
    return select_layerwise(scores, {name: sparsity for name in scores})


def _global_counts(scores: dict[str, np.ndarray], budget: int) -> dict[str, int]:
    """How many of each layer's scores fall under one global threshold that removes `budget`."""
    if budget <= 0 or not scores:
        return {name: 0 for name in scores}
    budget = min(budget, sum(array.size for array in scores.values()))
    threshold = global_kth_smallest(list(scores.values()), budget)
    counts = {name: int(np.count_nonzero(array < threshold)) for name, array in scores.items()}
    missing = budget - sum(counts.values())
    for name, array in scores.items():  # ties at the threshold, in layer order
        if missing <= 0:
            break
        taken = min(int(np.count_nonzero(array == threshold)), missing)
        counts[name] += taken
        missing -= taken
    return counts


SAMPLE_SIZE = 1 << 20


def global_kth_smallest(arrays: list[np.ndarray], k: int, seed: int = 0) -> float:
    """The k-th smallest value (1-based) over several arrays, without concatenating them all.

    Floyd-Rivest style: a random sample brackets the answer, one counting pass finds how many
    values lie below the bracket, and only the values inside it (a few per million) are gathered
    and partitioned. Falls back to one concatenation when the bracket misses (never seen in
    practice) or the arrays are small. Memory: the bracket, not a copy of every score.
    """
    total = sum(array.size for array in arrays)
    if total <= 4 * SAMPLE_SIZE:
        pooled = np.concatenate([array.reshape(-1) for array in arrays])
        return float(np.partition(pooled, k - 1)[k - 1])
    rng = np.random.default_rng(seed)
    sample = np.concatenate(
        [rng.choice(array.reshape(-1), size=max(1, round(SAMPLE_SIZE * array.size / total))) for array in arrays]
    )
    sample.sort()
    position = k / total * sample.size
    margin = 6 * np.sqrt(sample.size) + 16  # six standard deviations of the sample rank
    low = sample[max(0, int(position - margin))]
    high = sample[min(sample.size - 1, int(position + margin))]
    below = sum(int(np.count_nonzero(array < low)) for array in arrays)
    inside = np.concatenate([array[(array >= low) & (array <= high)] for array in arrays])
    rank = k - 1 - below
    if 0 <= rank < inside.size:
        return float(np.partition(inside, rank)[rank])
    pooled = np.concatenate([array.reshape(-1) for array in arrays])
    return float(np.partition(pooled, k - 1)[k - 1])


def masks_from_plans(scores: dict[str, np.ndarray], plans: dict[str, LayerPlan]) -> dict[str, np.ndarray]:
    """Keep-masks that drop each plan's count of lowest scores."""
    return {name: smallest(scores[name], plan.count) for name, plan in plans.items()}
