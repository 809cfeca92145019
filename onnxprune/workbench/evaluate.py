"""Accuracy and loss of a model on a data set, in onnxruntime (the truth) or torch (the speed)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import onnx
import torch

from onnxprune.errors import ConfigError, stage
from onnxprune.graph.model import Model, with_symbolic_batch
from onnxprune.workbench.data import Dataset, Preprocess, check_labels
from onnxprune.workbench.metrics import scores_to_metrics

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


def check_classifier(model: Model) -> None:
    """Refuse to measure accuracy on a model whose output is not one score per class (an image, a map...)."""
    for value in model.proto.graph.output[:1]:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        inner = [d for d in dims[1:] if d != 1]  # the batch, then class scores (MATLAB may add 1 x 1 dims)
        if len(inner) > 1:
            shape = "x".join("?" if d is None else str(d) for d in dims)
            raise ConfigError(
                f"the model's output '{value.name}' is {shape}, not one score per class: accuracy has no meaning "
                "for it; evaluate, sweep and fine-tuning need a classifier"
            )


# a mean loss this many times that of a uniform guess (ln C per sample) is confidently wrong, the mark of
# inputs on another scale than in training (resnet_2b given --pixel-range 0-255: top-1 35%, loss 46 and 183)
LOSS_OFF_FACTOR = 5.0


def chance_note(top1: float | None, classes: int, flat: bool = True) -> str | None:
    """A note when an accuracy is near chance: the data is most likely prepared differently than in training.

    `flat`: whether the model takes flat inputs (only then is --flatten worth checking).
    """
    chance = 1 / classes if classes >= 2 else None
    if top1 is None or chance is None or top1 >= min(2.5 * chance, chance + 0.5 * (1 - chance)):
        return None
    return (
        f"top-1 {top1:.2%} is near chance ({1 / classes:.1%} for {classes} classes): the samples are probably not "
        f"prepared as in training; {_what_to_check(flat)}"
    )


def input_scale_note(top1: float | None, loss: float | None, classes: int, flat: bool = True) -> str | None:
    """A note when the loss is far above a uniform guess's: confidently wrong, as with inputs on another scale.

    Top-1 may be well above chance then (the note that `chance_note` would miss); the dense model's
    loss is normally below ln(classes).
    """
    if top1 is None or loss is None or classes < 2 or chance_note(top1, classes, flat):
        return None
    guess = math.log(classes)
    if loss <= LOSS_OFF_FACTOR * guess:
        return None
    return (
        f"loss {loss:.1f} is {loss / guess:.0f} times a uniform guess's ({guess:.2f} for {classes} classes) at top-1 "
        f"{top1:.2%}: the model is confidently wrong, as when inputs are scaled differently than in training; "
        f"{_what_to_check(flat)}"
    )


def data_notes(evaluation: Evaluation, classes: int, flat: bool = True) -> list[str]:
    """What a dense model's accuracy and loss say about how its samples were prepared.

    `chance_note` and `input_scale_note`, those that apply: empty when they look like a trained model's.
    """
    notes = [chance_note(evaluation.top1, classes, flat),
             input_scale_note(evaluation.top1, evaluation.loss, classes, flat)]  # fmt: skip
    return [note for note in notes if note]


def _what_to_check(flat: bool) -> str:
    return "check " + ("--flatten (row or column), " if flat else "") + "--pixel-range and --mean/--std"


@stage("evaluation")
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
    check_classifier(model)
    if model.num_classes:
        check_labels(dataset, model.num_classes)
    if engine == "torch":
        run = torch_runner(torch_module if torch_module is not None else _converted(model))
    else:
        run = onnxruntime_runner(model.proto, providers)
    started = time.perf_counter()
    batches = (
        (preprocess(dataset, indices), dataset.labels[indices])
        for indices in (np.arange(s, min(s + batch_size, len(dataset))) for s in range(0, len(dataset), batch_size))
    )
    top1, top5, loss = metrics_over(run, batches, model.final_softmax is not None)
    return Evaluation(top1, top5, loss, len(dataset), engine, time.perf_counter() - started)


def metrics_over(
    run: Callable[[np.ndarray], np.ndarray], batches: Iterable[tuple[np.ndarray, np.ndarray]], probabilities: bool
) -> tuple[float, float, float]:
    """The one evaluation loop: (top-1, top-5, mean loss) of `run` over (inputs, labels) batches.

    Args:
        run: inputs -> class scores (`onnxruntime_runner`, `torch_runner`).
        batches: an iterable of (inputs, labels) numpy pairs.
        probabilities: the scores are probabilities (a final Softmax), not logits.
    """
    hits1 = hits5 = count = 0
    loss = 0.0
    for inputs, labels in batches:
        top1, top5, batch_loss = scores_to_metrics(run(inputs), labels, probabilities)
        hits1, hits5, loss, count = hits1 + top1, hits5 + top5, loss + batch_loss, count + len(labels)
    return hits1 / max(count, 1), hits5 / max(count, 1), loss / max(count, 1)


def onnxruntime_runner(
    proto: onnx.ModelProto, providers: list[str] | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """Inputs -> scores in onnxruntime (a fixed batch of 1 made symbolic; else one sample per call)."""
    from onnxprune.graph.verify import session

    ort_session = session(with_symbolic_batch(proto).SerializeToString(), providers or default_providers())
    input_name = ort_session.get_inputs()[0].name
    return _batched(lambda batch: ort_session.run(None, {input_name: batch})[0])


def default_providers() -> list[str]:
    """CUDA first when onnxruntime-gpu sees a GPU, then CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _converted(model: Model) -> torch.nn.Module:
    from onnxprune.workbench.convert import to_torch

    return to_torch(model).module


def torch_runner(module: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """Inputs -> scores of a torch module in eval mode, on the device it lives on."""
    module.eval()
    device = next(iter(module.parameters()), torch.empty(0)).device

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            output = module(torch.from_numpy(batch).to(device))
        output = output[0] if isinstance(output, (tuple, list)) else output
        return output.float().cpu().numpy()

    return _batched(run)


def _batched(run_batch: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
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
