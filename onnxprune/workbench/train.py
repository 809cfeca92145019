"""Masked fine-tuning: pruned weights stay exactly zero while the survivors learn.

Masks are torch.nn.utils.prune masks (`weight_orig` x `weight_mask`): the gradient reaching a
pruned weight is zero, so no optimizer step can revive it. A model loaded from a pruned ONNX
file gets its masks from its zeros.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx
from torch.nn.utils import prune as torch_prune

from onnxprune.errors import ConfigError, stage
from onnxprune.options import TrainOptions
from onnxprune.workbench.convert import TorchModel
from onnxprune.workbench.data import Dataset, Preprocess
from onnxprune.workbench.metrics import scores_to_metrics


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: training loss and accuracy, validation accuracy and loss, throughput."""

    epoch: int
    train_loss: float
    train_top1: float
    val_top1: float | None
    val_loss: float | None
    seconds: float
    images_per_second: float
    lr: float
    scale_sparsity: float | None = None


@dataclass
class TrainResult:
    """All epochs, and which one was kept (the best on validation, or the last)."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0

    @property
    def best(self) -> EpochRecord | None:
        """The kept epoch's record."""
        return next((r for r in self.history if r.epoch == self.best_epoch), None)


Progress = Callable[[dict], None]


class StepHook(Protocol):
    """Called after every optimizer step (gradual pruning changes the masks while training)."""

    def __call__(self, step: int, total: int) -> None:
        """Step `step` (1-based) of `total` has been taken."""

    @property
    def final(self) -> bool:
        """True once the masks no longer change."""


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA when present (or asked for), else CPU; asking for CUDA without a GPU is an error."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    return torch.device(requested)


def ensure_masks(torch_model: TorchModel) -> None:
    """Give every prunable layer a torch.nn.utils.prune mask; a layer without one gets `weight != 0`."""
    for entry in torch_model.params.values():
        if not hasattr(entry.module, "weight_mask"):
            torch_prune.custom_from_mask(entry.module, "weight", entry.parameter.detach() != 0)


def logits_module(torch_model: TorchModel, softmax_output: str | None) -> torch.nn.Module:
    """The model without its final Softmax, for a numerically sound cross-entropy.

    MATLAB exports end with a Softmax; training on log(softmax) of probabilities loses precision.
    The returned GraphModule shares every parameter with `torch_model.module`.
    """
    module = torch_model.module
    if softmax_output is None or softmax_output not in _outputs_of(module):
        return module
    logits = fx.GraphModule(module, copy.deepcopy(module.graph))
    graph = logits.graph
    target = next(n for n in graph.nodes if n.op == "call_module" and softmax_output in _outputs_of_node(module, n))
    output = next(n for n in graph.nodes if n.op == "output")
    if output.args[0] is not target:
        return module  # the Softmax is not the last step: train on the output as it is
    output.args = (target.args[0],)
    graph.eliminate_dead_code()
    logits.recompile()
    return logits


def _outputs_of(module: fx.GraphModule) -> set[str]:
    return {o for n in module.graph.nodes if n.op == "call_module" for o in _outputs_of_node(module, n)}


def _outputs_of_node(module: fx.GraphModule, node: fx.Node) -> tuple[str, ...]:
    mapping = getattr(module.get_submodule(node.target), "onnx_mapping", None)
    return tuple(getattr(mapping, "outputs", ()))


@stage("training")
def finetune(
    torch_model: TorchModel,
    train: Dataset,
    preprocess: Preprocess,
    options: TrainOptions | None = None,
    val: Dataset | None = None,
    softmax_output: str | None = None,
    progress: Progress | None = None,
    teacher: torch.nn.Module | None = None,
    step_hook: StepHook | None = None,
) -> TrainResult:
    """Fine-tune with masks held; keep the epoch that is best on `val` (the last one without `val`).

    Args:
        torch_model: the converted (and pruned) model; trained in place.
        train: training samples.
        preprocess: how samples become the model's input.
        options: `TrainOptions`.
        val: validation samples; the best epoch's weights are restored at the end.
        softmax_output: ONNX name of a final Softmax's output, if the model ends with one
            (trained through its input, the logits).
        progress: called with a dict after every step ({"epoch", "step", "steps", "loss",
            "top1"}) and every epoch ({"epoch", "record"}).
        teacher: a module whose outputs are logits (the dense model), distilled from when
            `options.distill_weight` > 0; run in eval mode, never trained.
        step_hook: a `StepHook`, called after every optimizer step with (step, total steps);
            only epochs that end with its masks final can be kept as the best.

    Returns:
        The per-epoch history and the kept epoch.
    """
    options = options or TrainOptions()
    if options.distill_weight > 0 and teacher is None:
        raise ConfigError("distillation needs a teacher: the dense model's logits")
    rank, world = distributed()
    device = pick_device(options.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    ensure_masks(torch_model)
    module = torch_model.module.to(device)
    network = logits_module(torch_model, softmax_output)
    if world > 1:
        # gradients are averaged across ranks; each rank computes its share of every global batch
        network = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    inputs = torch.from_numpy(preprocess(train))
    labels = torch.from_numpy(train.labels)
    val_inputs = preprocess(val) if val is not None else None
    image_input = inputs.ndim == 4 and min(inputs.shape[-2:]) >= 8
    channels_last = device.type == "cuda" and image_input
    if channels_last:
        module.to(memory_format=torch.channels_last)
    if teacher is not None and options.distill_weight > 0:
        teacher = teacher.to(device).eval().requires_grad_(False)
        if channels_last:
            teacher.to(memory_format=torch.channels_last)
    else:
        teacher = None
    trainable = [p for p in module.parameters() if p.requires_grad]
    if options.optimizer == "adam":  # per-parameter step sizes: indifferent to a layer's input scale
        optimizer = torch.optim.AdamW(trainable, lr=options.lr, weight_decay=options.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            trainable, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay
        )
    steps_per_epoch = math.ceil(len(train) / options.batch_size)
    if options.max_steps:
        steps_per_epoch = min(steps_per_epoch, options.max_steps)
    total_steps = max(1, options.epochs * steps_per_epoch)
    start, end = options.cosine_span  # the part of one cosine decay this fine-tuning runs through
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: 0.5 * (1 + math.cos(math.pi * (start + (end - start) * min(step, total_steps) / total_steps))),
    )
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    generator = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)
    result = TrainResult()
    best_state, best_score = None, -1.0
    for epoch in range(1, options.epochs + 1):
        record = _train_epoch(
            network, module, inputs, labels, options, optimizer, scheduler, scaler, generator,
            device, channels_last, image_input, steps_per_epoch, epoch, progress, teacher, step_hook,
        )  # fmt: skip
        if val is not None:
            val_top1, val_loss = _validate(network, val_inputs, val.labels, options.batch_size, device, channels_last)
            record = EpochRecord(**{**record.__dict__, "val_top1": val_top1, "val_loss": val_loss})
        result.history.append(record)
        score = record.val_top1 if record.val_top1 is not None else epoch
        final_masks = step_hook is None or step_hook.final
        if final_masks and score > best_score:
            best_score, result.best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        if progress:
            progress({"epoch": epoch, "record": record})
    if best_state is not None:
        module.load_state_dict(best_state)
    if teacher is not None:
        teacher.to(torch.device("cpu"), memory_format=torch.contiguous_format)
    module.to(torch.device("cpu"), memory_format=torch.contiguous_format).eval()
    refresh_pruned(module)
    return result


def refresh_pruned(module: torch.nn.Module) -> None:
    """Recompute every masked tensor (`weight = weight_orig * weight_mask`) where its parts now live.

    torch.nn.utils.prune keeps `weight` as a plain attribute that a pre-hook recomputes before each
    forward; `Module.to` moves `weight_orig` and `weight_mask` but not it, so after training on
    CUDA it would stay on the GPU beside a model moved back to the CPU.
    """
    for layer in module.modules():
        for hook in layer._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                setattr(layer, hook._tensor_name, hook.apply_mask(layer))


def _train_epoch(
    network: torch.nn.Module,
    module: torch.nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    options: TrainOptions,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
    device: torch.device,
    channels_last: bool,
    image_input: bool,
    steps: int,
    epoch: int,
    progress: Progress | None,
    teacher: torch.nn.Module | None = None,
    step_hook: StepHook | None = None,
) -> EpochRecord:
    module.train()
    order = torch.randperm(inputs.shape[0], generator=generator)
    started = time.perf_counter()
    seen = correct = 0
    loss_sum = 0.0
    for step in range(steps):
        batch = order[step * options.batch_size : (step + 1) * options.batch_size]
        x = inputs[batch]
        y = labels[batch]
        if options.augment and image_input:
            x = augment(x, generator)  # the whole global batch: every rank draws the same numbers
        x, y = _share(x, y)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            logits = network(x)
            logits = logits.reshape(logits.shape[0], -1)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=options.label_smoothing)
            if teacher is not None:
                loss = _with_distillation(loss, logits, teacher, x, options)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if options.bn_l1 > 0:
            scaler.unscale_(optimizer)
            _slimming_penalty(module, options.bn_l1)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if step_hook is not None:
            step_hook((epoch - 1) * steps + step + 1, options.epochs * steps)
        seen += y.shape[0]
        correct += int((logits.argmax(1) == y).sum())
        loss_sum += float(loss.detach()) * y.shape[0]
        if progress:
            progress(
                {"epoch": epoch, "step": step + 1, "steps": steps, "loss": loss_sum / seen, "top1": correct / seen}
            )
    seconds = time.perf_counter() - started
    return EpochRecord(
        epoch=epoch,
        train_loss=loss_sum / max(seen, 1),
        train_top1=correct / max(seen, 1),
        val_top1=None,
        val_loss=None,
        seconds=seconds,
        images_per_second=seen / seconds if seconds else 0.0,
        lr=optimizer.param_groups[0]["lr"],
        scale_sparsity=scale_sparsity(module),
    )


def _with_distillation(
    loss: torch.Tensor, logits: torch.Tensor, teacher: torch.nn.Module, x: torch.Tensor, options: TrainOptions
) -> torch.Tensor:
    """(1 - w) x loss + w x T^2 x KL(teacher || student) at temperature T (Hinton et al. 2015).

    T^2 keeps the soft targets' gradients on the scale of the hard ones, whatever T.
    """
    with torch.no_grad():
        target = teacher(x)
        target = (target[0] if isinstance(target, (tuple, list)) else target).reshape(logits.shape).float()
    temperature, weight = options.distill_temperature, options.distill_weight
    soft = F.kl_div(
        F.log_softmax(logits.float() / temperature, dim=1), F.log_softmax(target / temperature, dim=1),
        reduction="batchmean", log_target=True,
    )  # fmt: skip
    return (1 - weight) * loss + weight * temperature**2 * soft


def _slimming_penalty(module: torch.nn.Module, strength: float) -> None:
    """Add strength x sign(gamma) to the gradient of every BatchNorm scale (L1 subgradient)."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and layer.weight is not None:
            scale = layer.weight_orig if hasattr(layer, "weight_orig") else layer.weight
            if scale.grad is not None:
                scale.grad.add_(strength * torch.sign(scale.detach()))


SCALE_ZERO = 1e-2


def scale_sparsity(module: torch.nn.Module) -> float | None:
    """Fraction of BatchNorm scale factors with |gamma| < 0.01 (None without BatchNorm)."""
    scales = [
        layer.weight.detach().abs().reshape(-1)
        for layer in module.modules()
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and layer.weight is not None
    ]
    if not scales:
        return None
    values = torch.cat(scales)
    return float((values < SCALE_ZERO).float().mean())


def distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (or without torchrun): the process that writes files."""
    return distributed()[0] == 0


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    import torch.distributed as dist

    if distributed()[1] > 1:
        dist.barrier()


def _share(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The contiguous slice of a global batch that belongs to this rank."""
    rank, world = distributed()
    if world == 1:
        return x, y
    bounds = np.linspace(0, x.shape[0], world + 1).round().astype(int)
    return x[bounds[rank] : bounds[rank + 1]], y[bounds[rank] : bounds[rank + 1]]


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random crop from a 4-pixel zero-padded image (NCHW or NHWC)."""
    channels_first = x.shape[1] in (1, 3) or x.shape[-1] not in (1, 3)
    images = x if channels_first else x.permute(0, 3, 1, 2)
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    height, width = images.shape[-2:]
    padded = F.pad(images, (4, 4, 4, 4))
    dy, dx = (int(v) for v in torch.randint(0, 9, (2,), generator=generator))
    images = padded[..., dy : dy + height, dx : dx + width]
    return images if channels_first else images.permute(0, 2, 3, 1)


def _validate(
    network: torch.nn.Module,
    inputs: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    device: torch.device,
    channels_last: bool,
) -> tuple[float, float]:
    network.eval()
    hits = 0
    loss = 0.0
    with torch.no_grad():
        for start in range(0, inputs.shape[0], batch_size * 4):
            x = torch.from_numpy(inputs[start : start + batch_size * 4]).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = network(x).float().reshape(x.shape[0], -1).cpu().numpy()
            top1, _, batch_loss = scores_to_metrics(logits, labels[start : start + x.shape[0]], probabilities=False)
            hits, loss = hits + top1, loss + batch_loss
    return hits / inputs.shape[0], loss / inputs.shape[0]
