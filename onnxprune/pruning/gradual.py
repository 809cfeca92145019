"""Gradual pruning (Zhu & Gupta, 2017): the masks grow to the target while the model fine-tunes.

One-shot pruning removes every weight at once and lets fine-tuning repair the damage; gradual
pruning removes them in small steps along a cubic ramp, s_t = s (1 - (1 - t / T)^3), choosing again
on the trained weights at each step, so the network adapts while it loses them. It costs no more
training than one-shot pruning with the same epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onnxprune.graph.model import Model
from onnxprune.options import PruneOptions
from onnxprune.pruning.oneshot import reselect
from onnxprune.workbench.convert import TorchModel
from onnxprune.workbench.data import Dataset, Preprocess

# The ramp ends at this fraction of the fine-tuning steps; the rest trains the final masks.
RAMP_END = 0.75
# Mask updates along the ramp (each one scores and selects again).
UPDATES = 20


@dataclass
class GradualPruning:
    """A `onnxprune.workbench.train.StepHook` that narrows the masks along the cubic ramp.

    Attributes:
        model: the model being pruned (layer names and shapes; its weights are not read).
        options: what to prune to (`options.target`), by which method and scope.
        torch_model: the model being fine-tuned; its masks are narrowed in place.
        data, preprocess: training samples, for methods that score with data.
        ramp_end: the fraction of the fine-tuning steps by which the target is reached.
        updates: how many times the masks are chosen again along the ramp.
        history: per update made, the step and the sparsity reached (with fewer ramp steps
            than `updates`, a step makes several at once).
    """

    model: Model
    options: PruneOptions
    torch_model: TorchModel
    data: Dataset | None = None
    preprocess: Preprocess | None = None
    ramp_end: float = RAMP_END
    updates: int = UPDATES
    history: list[dict] = field(default_factory=list)
    reached: int = 0  # updates made so far, of `updates`

    def sparsity_after(self, update: int) -> float:
        """The sparsity the masks reach at update `update` of `updates`."""
        return self.options.target * (1.0 - (1.0 - update / self.updates) ** 3)

    def __call__(self, step: int, total: int) -> None:
        """Narrow the masks when `step` passes the next update's point on the ramp."""
        ramp_steps = max(1, round(self.ramp_end * total))
        due = min(self.updates, step * self.updates // ramp_steps)
        if due > self.reached:
            self.reached = due
            sparsity = self.sparsity_after(due)
            reselect(self.model, self.options, self.torch_model, sparsity, self.data, self.preprocess)
            self.history.append({"step": step, "sparsity": round(sparsity, 6)})

    @property
    def final(self) -> bool:
        """True once the target is reached (the masks no longer change)."""
        return self.reached >= self.updates
