"""Accuracy and loss of a model on a data set, in onnxruntime (the truth) or torch (the speed)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from onnxprune.errors import ConfigError
from onnxprune.graph.model import Model, with_symbolic_batch
from onnxprune.workbench.data import Dataset, Preprocess, check_labels

ENGINES = ("onnxruntime", "torch")


@dataclass(frozen=True)
class Evaluation:
    """Top-1 / top-5 accuracy (fractions) and mean cross-entropy loss over `samples`."""

    top1: float
    top5: float
    loss: float
    samples: int
    engine: str
    seconds: float

    def as_dict(self) -> dict:
        """Plain types, for JSON and MATLAB."""
        return {
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "samples": self.samples,
            "engine": self.engine,
            "seconds": self.seconds,
        }


def scores_to_metrics(scores: np.ndarray, labels: np.ndarray, probabilities: bool) -> tuple[int, int, float]:
    """(top-1 hits, top-5 hits, summed loss) for one batch of model outputs."""
    scores = scores.reshape(scores.shape[0], -1).astype(np.float64)
    if probabilities:
        log_p = np.log(np.clip(scores, 1e-12, None))
    else:
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    k = min(5, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top1 = int(np.sum(top[:, 0] == labels))
    top5 = int(np.sum(np.any(top == labels[:, None], axis=1)))
    loss = float(-np.sum(log_p[np.arange(labels.size), labels]))
    return top1, top5, loss


def evaluate(
    model: Model,
    dataset: Dataset,
    preprocess: Preprocess,
    engine: str = "onnxruntime",
    batch_size: int = 256,
    torch_module: torch.nn.Module | None = None,
    providers: list[str] | None = None,
) -> Evaluation:
    """Top-1, top-5 and loss of `model` on `dataset`.

    Args:
        model: the ONNX model (for onnxruntime; and its output kind).
        dataset: labelled samples.
        preprocess: how samples become the model's input.
        engine: "onnxruntime" runs the ONNX file as it would ship; "torch" runs `torch_module`
            (converted from the model when not given). The two agree on the same data.
        batch_size: samples per call. Graphs with a fixed batch of 1 (MATLAB before R2022a) are
            run with a symbolic batch dimension in a working copy, or one sample per call where
            the graph hard-codes the batch.
        torch_module: the converted model to use with engine="torch".
        providers: onnxruntime execution providers (default: CUDA when available, else CPU).
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got '{engine}'")
    check_labels(dataset, model.num_classes or int(dataset.labels.max()) + 1)
    run = _torch_runner(model, torch_module) if engine == "torch" else _ort_runner(model, providers)
    probabilities = model.final_softmax is not None
    started = time.perf_counter()
    hits1 = hits5 = 0
    loss = 0.0
    for start in range(0, len(dataset), batch_size):
        indices = np.arange(start, min(start + batch_size, len(dataset)))
        scores = run(preprocess(dataset, indices))
        top1, top5, batch_loss = scores_to_metrics(scores, dataset.labels[indices], probabilities)
        hits1, hits5, loss = hits1 + top1, hits5 + top5, loss + batch_loss
    count = len(dataset)
    return Evaluation(hits1 / count, hits5 / count, loss / count, count, engine, time.perf_counter() - started)


def _ort_runner(model: Model, providers: list[str] | None):
    from onnxprune.graph.verify import session

    ort_session = session(with_symbolic_batch(model.proto).SerializeToString(), providers or default_providers())
    input_name = ort_session.get_inputs()[0].name
    return _batched(lambda batch: ort_session.run(None, {input_name: batch})[0])


def default_providers() -> list[str]:
    """CUDA first when onnxruntime-gpu sees a GPU, then CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _torch_runner(model: Model, module: torch.nn.Module | None):
    if module is None:
        from onnxprune.workbench.convert import to_torch

        module = to_torch(model).module
    module.eval()
    device = next(iter(module.parameters()), torch.empty(0)).device

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            output = module(torch.from_numpy(batch).to(device))
        output = output[0] if isinstance(output, (tuple, list)) else output
        return output.float().cpu().numpy()

    return _batched(run)


def _batched(run_batch):
    """Run whole batches; if the graph hard-codes batch 1, fall back to one sample per call."""
    state = {"per_sample": False}

    def run(batch: np.ndarray) -> np.ndarray:
        if not state["per_sample"]:
            try:
                output = run_batch(batch)
                if output.shape[0] == batch.shape[0]:
                    return output
            except Exception:  # a Reshape to [1, ...] and the like
                if batch.shape[0] == 1:
                    raise
            state["per_sample"] = True
        return np.concatenate([run_batch(batch[i : i + 1]) for i in range(batch.shape[0])])

    return run
