"""Checks run on every written model: onnx.checker, onnxruntime, and equality with torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from onnxprune.errors import VerificationError, stage
from onnxprune.graph.model import InputSpec
from onnxprune.graph.proto import session as session  # its home is graph/proto.py; read here by many callers

# Written weights are bit-identical to torch's; what differs is kernel arithmetic (onnxruntime vs
# torch convolutions sum in different orders), which for float32 stays far inside these bounds.
# ATOL is relative to the output's largest magnitude (at least 1): rounding grows with the size of
# the values computed, so a logit near 0 beside logits in the hundreds carries their rounding.
RTOL = 1e-3
ATOL = 1e-4


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of `verify`: the largest difference seen and the tolerance it was held to.

    `atol` is the absolute tolerance in effect: `ATOL` times the largest output magnitude (at least 1).
    """

    max_abs_diff: float
    rtol: float
    atol: float
    batch: int


def random_batch(spec: InputSpec, batch: int = 2, seed: int = 0) -> np.ndarray:
    """Uniform [0, 1) input of the model's shape (batch fixed to 1 where the graph demands it)."""
    rng = np.random.default_rng(seed)
    batch = 1 if spec.fixed_batch and spec.shape[0] == 1 else batch
    dtype = np.float64 if spec.elem_type == "DOUBLE" else np.float32
    return rng.random(spec.concrete_shape(batch)).astype(dtype)


def torch_outputs(module: torch.nn.Module, inputs: np.ndarray) -> list[np.ndarray]:
    """Run a converted model in eval mode on CPU-or-wherever-it-lives; outputs as numpy."""
    device = next(iter(module.parameters()), torch.empty(0)).device
    with torch.no_grad():
        outputs = module(torch.from_numpy(inputs).to(device))
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    return [output.detach().cpu().numpy() for output in outputs]


@dataclass(frozen=True)
class Reference:
    """What the written file must reproduce: a batch and the torch model's outputs on it."""

    inputs: np.ndarray
    outputs: list[np.ndarray]


def reference(module: torch.nn.Module, spec: InputSpec, batch: int = 2) -> Reference:
    """Run the torch model on a random batch, to check a written file against later."""
    inputs = random_batch(spec, batch)
    return Reference(inputs=inputs, outputs=torch_outputs(module.eval(), inputs))


@stage("verification")
def verify(path: Path, expected: Reference, strict: bool = True) -> VerifyReport:
    """Check a written model: onnx.checker passes, onnxruntime loads it, outputs equal torch's.

    With `strict=False` the difference is measured and reported, not enforced (compaction
    through an LRN, which mixes neighbouring channels, cannot be exact).

    Raises:
        VerificationError: with the failing check and the measured difference.
    """
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise VerificationError(f"written model fails onnx.checker: {str(exc).strip().splitlines()[0]}") from None
    try:
        ort_session = session(path)
    except Exception as exc:
        raise VerificationError(f"onnxruntime cannot load the written model: {str(exc).strip()[:300]}") from None
    actual = ort_session.run(None, {ort_session.get_inputs()[0].name: expected.inputs})
    worst, largest_atol = 0.0, ATOL
    for index, (want, got) in enumerate(zip(expected.outputs, actual, strict=True)):
        want = np.asarray(want, dtype=np.float64).reshape(np.shape(got))
        got = np.asarray(got, dtype=np.float64)
        difference = float(np.max(np.abs(want - got))) if want.size else 0.0
        worst = max(worst, difference)
        atol = ATOL * max(1.0, float(np.max(np.abs(want)))) if want.size else ATOL
        largest_atol = max(largest_atol, atol)
        if strict and not np.allclose(got, want, rtol=RTOL, atol=atol):
            raise VerificationError(
                f"output {index} of the written model differs from torch by up to {difference:.3g} "
                f"(tolerance rtol={RTOL}, atol={atol:.3g}); the model was not saved"
            )
    return VerifyReport(max_abs_diff=worst, rtol=RTOL, atol=largest_atol, batch=expected.inputs.shape[0])
