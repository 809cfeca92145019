"""One-shot (OMP) and iterative (IMP) pruning with fine-tuning, checkpoints and resume.

A run lives in an output folder:

    run.json                the source model's hash and the options (what --resume checks)
    round_1.onnx ...        each finished round, verified (weights, biases, BatchNorm as trained)
    results.json / .csv     one record per finished round, rewritten after each round
    omp_unstructured_0.80_acc_0.912.onnx    the final model: schedule, kind, target sparsity (the
                                            folder's number), top-1

Every round starts from the previous round's checkpoint file, in an uninterrupted run as after
`--resume`, and is seeded by its number: an interrupted run resumed gives the same final model
as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from onnxprune.errors import ConfigError
from onnxprune.files import file_digest, save_atomic
from onnxprune.graph.channels import analyse
from onnxprune.graph.model import Model, from_proto, load
from onnxprune.graph.storage import save_model_file
from onnxprune.graph.verify import reference, verify
from onnxprune.options import ScheduleOptions, TrainOptions
from onnxprune.pruning.channels import channel_groups
from onnxprune.pruning.gradual import GradualPruning
from onnxprune.pruning.methods import check_schedule, default_scope, traits
from onnxprune.pruning.oneshot import PruneInputs, prune_with
from onnxprune.pruning.reconstruct import NOTE_START
from onnxprune.results import ResultRow, ResultTable
from onnxprune.results import read as read_results
from onnxprune.results import write as write_results
from onnxprune.workbench.convert import TorchModel, to_torch
from onnxprune.workbench.data import Dataset, Preprocess
from onnxprune.workbench.evaluate import evaluate
from onnxprune.workbench.metrics import sampling_noise
from onnxprune.workbench.train import ensure_masks, finetune, logits_module

if TYPE_CHECKING:
    import torch


@dataclass
class RoundRecord:
    """What one round did and measured."""

    round: int
    target_sparsity: float
    sparsity: float
    sparsity_all: float
    layer_sparsity: dict[str, float]
    top1: float | None
    top5: float | None
    loss: float | None
    seconds: float
    checkpoint: str
    train_history: list[dict] = field(default_factory=list)
    params_removed: float = 0.0
    macs_removed: float = 0.0
    method_history: list[dict] = field(default_factory=list)
    num_nonzero: int = 0
    top1_pruned: float | None = None  # after pruning, before fine-tuning (runs that fine-tune with validation)
    kept: str = "fine-tuned"  # or "pruned": fine-tuning ended below the pruned start, which was kept
    keep_margin: float | None = None  # the sampling noise of the validation split the keep decision allowed
    notes: list[str] = field(default_factory=list)  # what reconstruction did (each stage's, for a recipe)


@dataclass
class ScheduleResult:
    """A finished run: the rounds, the baseline, and the final file."""

    folder: Path
    rounds: list[RoundRecord]
    baseline_top1: float | None
    final_path: Path | None
    final_top1: float | None
    val_samples: int | None = None  # the validation split every top-1 of the run is measured on


Progress = Callable[[dict], None]


def run(
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: ScheduleOptions,
    train: Dataset | None,
    val: Dataset | None,
    preprocess: Preprocess,
    resume: bool = False,
    progress: Progress | None = None,
    command: str | None = None,
) -> ScheduleResult:
    """Prune `model_path` to `options.target` in `options.iterations` rounds, fine-tuning between them.

    Args:
        model_path: the source .onnx file (never modified).
        out_dir: the run's folder (created; with `resume`, an earlier run of the same model).
        options: `ScheduleOptions`.
        train: fine-tuning data (needed when `options.train.epochs > 0`).
        val: validation data for accuracy per round and for the final name (optional).
        preprocess: how samples become the model's input.
        resume: continue from the last finished round in `out_dir`.
        progress: called with dicts describing rounds ({"round", "rounds", "phase"}) and the
            fine-tuning steps (see `onnxprune.workbench.train.finetune`).
        command: the command line that started the run, recorded in run.json for the report.
    """
    model_path = Path(model_path)
    check_schedule(options)
    if options.prune.scope is None:  # the measured default, as `onnxprune prune` would choose it
        scope = default_scope(options.prune, options.train.epochs > 0, preprocess.pixel_range == "0-255")
        options = dataclasses.replace(options, prune=dataclasses.replace(options.prune, scope=scope))
    source = load(model_path)
    folder = Path(out_dir)
    if options.train.epochs > 0 and train is None:
        raise ConfigError("fine-tuning needs training data: give --data (and --finetune-epochs 0 to skip it)")
    identity = _identity(model_path, options)
    identity["command"] = command  # not compared by --resume: a resumed run adds --resume
    from onnxprune.workbench.train import is_main_process

    with run_lock(folder) if is_main_process() else contextlib.nullcontext():
        return _run_rounds(model_path, source, folder, identity, options, train, val, preprocess, resume, progress)


def _run_rounds(
    model_path: Path, source: Model, folder: Path, identity: dict, options: ScheduleOptions, train: Dataset | None,
    val: Dataset | None, preprocess: Preprocess, resume: bool, progress: Progress | None,
) -> ScheduleResult:  # fmt: skip
    from onnxprune.workbench.train import barrier, is_main_process

    records = _open_run(folder, identity, resume) if is_main_process() else []
    barrier()  # under torchrun, rank 0 creates the folder; the others follow its records
    if not is_main_process() and resume:
        records = [RoundRecord(**r) for r in read_results(folder / "results.json").extra["rounds"]]
    baseline = _baseline(source, val, preprocess, records, folder)
    teacher = _teacher(source) if options.train.distill_weight > 0 else None
    for number in range(len(records) + 1, options.iterations + 1):
        if progress:
            progress({"round": number, "rounds": options.iterations, "phase": "prune"})
        start_path = model_path if number == 1 else folder / records[-1].checkpoint
        record = _round(number, start_path, source, options, train, val, preprocess, folder, progress, teacher)
        records.append(record)
        if is_main_process():
            _write_results(folder, identity, baseline, records, final=None, val=val)
    final_path, final_top1 = _finish(folder, options, records, val, preprocess)
    if is_main_process():
        final = {"file": final_path.name, "top1": final_top1}
        _write_results(folder, identity, baseline, records, final=final, val=val)
        from onnxprune.report.html import write_report

        write_report(folder)
    return ScheduleResult(folder, records, baseline, final_path, final_top1, len(val) if val is not None else None)


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """One run per folder at a time: `.<folder>.lock` beside it holds the running process's id.

    A second run (a `--resume` started while the first still runs) is refused in one line. A lock
    left by a process that no longer exists (killed with -9, a power cut) is taken over, so the
    run can be resumed.
    """
    lock = folder.parent / f".{folder.name}.lock"
    if not folder.parent.is_dir():  # the run's own checks say so in one line
        yield
        return
    for _ in range(2):
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is not None and _alive(owner):
                raise ConfigError(
                    f"{folder} is in use by another run (process {owner}); wait for it to finish, "
                    "or choose another --out-dir"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
    else:
        raise ConfigError(f"{folder}: cannot take its lock {lock}; remove it if no run is using the folder")
    try:
        os.write(handle, str(os.getpid()).encode())
        os.close(handle)
        yield
    finally:
        if _lock_owner(lock) == os.getpid():
            lock.unlink(missing_ok=True)


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip() or "0") or None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own stale lock (a lock file left behind by this very process id)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _identity(model_path: Path, options: ScheduleOptions) -> dict:
    digest = file_digest(model_path)  # in blocks: a large model is not read into memory at once
    described = json.loads(json.dumps(asdict(options)))  # as run.json holds it: tuples become lists
    return {"model": model_path.name, "model_sha256": digest, "kind": traits(options.prune).kind, "options": described}


def _open_run(folder: Path, identity: dict, resume: bool) -> list[RoundRecord]:
    run_file = folder / "run.json"
    if resume:
        if not run_file.exists():
            raise ConfigError(f"--resume: {folder} holds no run (no run.json); start without --resume")
        earlier = json.loads(run_file.read_text())
        if earlier.get("model_sha256") != identity["model_sha256"]:
            raise ConfigError(
                f"--resume: {folder} holds a run of another model ({earlier.get('model')}); "
                "use a new --out-dir or the model that run started from"
            )
        changed = _first_difference(earlier.get("options", {}), identity["options"])
        if changed is not None:
            raise ConfigError(
                f"--resume: {folder} was started with {changed}; repeat the options it was started with, "
                "or use a new --out-dir"
            )
        for leftover in folder.glob(".*.tmp"):  # a write the interruption cut short; its round is redone
            leftover.unlink()
        results = folder / "results.json"
        rounds = read_results(results).extra["rounds"] if results.exists() else []
        return [RoundRecord(**record) for record in rounds]
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} is not empty; choose a new --out-dir, or add --resume to continue its run")
    if not folder.parent.exists():
        raise ConfigError(f"{folder.parent} does not exist; create it or choose another --out-dir")
    folder.mkdir(exist_ok=True)
    _write_json(folder / "run.json", identity)
    return []


def _teacher(source: Model) -> torch.nn.Module:
    """The unpruned source model's logits (a final Softmax cut off), the distillation teacher of every round."""
    return logits_module(to_torch(source), source.final_softmax).eval()


def _first_difference(earlier: dict, now: dict, prefix: str = "") -> str | None:
    """'train.lr = 0.01 (now 0.05)' for the first option that differs, or None."""
    for key in sorted(set(earlier) | set(now)):
        before, after = earlier.get(key), now.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            found = _first_difference(before, after, f"{prefix}{key}.")
            if found:
                return found
        elif before != after:
            return f"{prefix}{key} = {before!r} (now {after!r})"
    return None


def _baseline(
    source: Model, val: Dataset | None, preprocess: Preprocess, records: list[RoundRecord], folder: Path
) -> float | None:
    results = folder / "results.json"
    if records and results.exists():
        return read_results(results).baseline_accuracy
    return evaluate(source, val, preprocess).top1 if val is not None else None


def _round(
    number: int, start_path: Path, source: Model, options: ScheduleOptions, train: Dataset | None, val: Dataset | None,
    preprocess: Preprocess, folder: Path, progress: Progress | None, teacher: torch.nn.Module | None,
) -> RoundRecord:  # fmt: skip
    started = time.perf_counter()
    start = load(start_path)
    torch_model = to_torch(start)
    target = options.sparsity_at(number)
    kind = traits(options.prune).kind
    structured = kind == "filter"
    sparsity_history = []
    if number == 1 and options.sparsity_epochs > 0:  # Network Slimming: push BatchNorm scales to zero first
        if progress:
            progress({"round": number, "rounds": options.iterations, "phase": "sparsity training"})
        sparse_options = TrainOptions(
            **{**asdict(options.train), "epochs": options.sparsity_epochs, "bn_l1": options.bn_l1}
        )
        trained = finetune(torch_model, train, preprocess, sparse_options, val, source.final_softmax, progress, teacher)
        sparsity_history = [asdict(record) for record in trained.history]
    gradual = options.schedule == "gradual"
    inputs = PruneInputs(
        torch_model=torch_model, data=train, preprocess=preprocess, val=val, val_preprocess=preprocess,
        original_counts=original_channel_counts(source) if structured else None,
    )  # fmt: skip
    # gradual: the masks grow while fine-tuning, from none
    result = prune_with(start, options.prune, inputs, sparsity=0.0 if gradual else target)
    if options.prune.budget is not None:  # the budget chose how many channels went
        target = result.requested
    if result.compacted is not None:  # fine-tune the compacted model: a smaller graph, nothing to mask
        start = from_proto(result.compacted)
        torch_model = to_torch(start)
    else:  # a recipe's weight stage pruned the model its earlier stages left
        start, torch_model = result.source, result.torch_model
        if options.rewind:
            _rewind(torch_model, source)
    history = []
    top1_pruned, start_state = None, None
    if options.train.epochs > 0 and val is not None and not gradual:  # gradual starts dense: nothing to compare
        top1_pruned = evaluate(start, val, preprocess, engine="torch", torch_module=torch_model.module).top1
        ensure_masks(torch_model)  # the masks fine-tuning adds are part of the state to restore
        start_state = {key: value.detach().clone() for key, value in torch_model.module.state_dict().items()}
    if options.train.epochs > 0:
        if progress:
            progress({"round": number, "rounds": options.iterations, "phase": "finetune"})
        round_options = options.train_for_round(number)
        hook = GradualPruning(start, options.prune, torch_model, train, preprocess) if gradual else None
        trained = finetune(
            torch_model, train, preprocess, round_options, val, source.final_softmax, progress, teacher, hook
        )
        history = [asdict(record) for record in trained.history]
        if hook is not None:
            result.history = hook.history
    kept, evaluation, margin = "fine-tuned", None, None
    if start_state is not None:
        finite = all(bool(value.isfinite().all()) for value in torch_model.module.state_dict().values()
                     if value.is_floating_point())  # fmt: skip
        if finite:  # the round's evaluation, unless the pruned start is kept
            evaluation = evaluate(start, val, preprocess, engine="torch", torch_module=torch_model.module)
        margin = sampling_noise(top1_pruned, len(val))
        # worse beyond what the split's sampling noise explains (a learning rate too high?): keep the start
        if evaluation is None or evaluation.top1 < top1_pruned - margin:
            torch_model.module.load_state_dict(start_state)
            kept, evaluation = "pruned", None
    del start_state
    checkpoint = folder / f"round_{number}.onnx"
    write_checkpoint(start, torch_model, checkpoint)
    written = load(checkpoint)
    if val is not None and evaluation is None:
        evaluation = evaluate(written, val, preprocess, engine="torch", torch_module=torch_model.module)
    if structured:
        sparsity, layer_sparsity = _channel_sparsity(written, source)
    elif kind == "hybrid":  # weights gone, removed or zeroed, of the source's
        layer_sparsity = _layer_sparsity(written)
        sparsity = 1 - written.layer_nonzero() / max(1, source.layer_total("numel"))
    else:
        layer_sparsity = _layer_sparsity(written)
        zeros = sum(s * layer.numel for s, layer in zip(layer_sparsity.values(), written.layers, strict=True))
        sparsity = zeros / sum(layer.numel for layer in written.layers)
    total, all_zeros = written.parameter_counts()
    return RoundRecord(
        round=number,
        target_sparsity=target,
        sparsity=sparsity,
        sparsity_all=all_zeros / total if total else 0.0,
        layer_sparsity=layer_sparsity,
        top1=evaluation.top1 if evaluation else None,
        top5=evaluation.top5 if evaluation else None,
        loss=evaluation.loss if evaluation else None,
        seconds=time.perf_counter() - started,
        checkpoint=checkpoint.name,
        train_history=history,
        params_removed=1 - written.layer_total("numel") / max(1, source.layer_total("numel")),
        macs_removed=1 - written.layer_total("macs") / max(1, source.layer_total("macs")),
        method_history=sparsity_history + result.history,
        num_nonzero=written.layer_nonzero(),
        top1_pruned=top1_pruned,
        kept=kept,
        keep_margin=margin,
        notes=[
            note
            for note in result.notes
            if note.startswith((NOTE_START, "--speedup", "--target-macs")) or f": {NOTE_START}" in note
        ],
    )


def original_channel_counts(source: Model) -> dict[str, int]:
    """Each channel group's size in the source model (fractions of later rounds refer to it)."""
    groups, _ = channel_groups(source, analyse(source), mask_only=True)
    return {name: len(group.roots) for name, group in groups.items()}


def _channel_sparsity(written: Model, source: Model) -> tuple[float, dict[str, float]]:
    """Fraction of the source's removable units gone, and per layer the fraction of channels gone."""
    original = original_channel_counts(source)
    now = original_channel_counts(written)
    removed = sum(original[name] - now.get(name, 0) for name in original)
    before = {layer.name: layer.shape[layer.out_axis] for layer in source.layers}
    per_layer = {layer.name: 1 - layer.shape[layer.out_axis] / before[layer.name] for layer in written.layers}
    return removed / max(1, sum(original.values())), per_layer


def _rewind(torch_model: TorchModel, source: Model) -> None:
    """Reset surviving weights to the source model's values; the masks keep pruned ones at zero."""
    import torch

    with torch.no_grad():
        for entry in torch_model.params.values():
            original = entry.from_onnx(source.weight_array(entry.layer)).to(entry.module.weight_orig.dtype)
            entry.module.weight_orig.copy_(original)
            entry.module.weight = entry.module.weight_orig * entry.module.weight_mask


def write_checkpoint(start: Model, torch_model: TorchModel, path: Path) -> None:
    """Write every trainable initializer of `torch_model` into `start`'s graph, verified, atomically.

    Under torchrun only rank 0 writes; the others wait for the file.
    """
    from onnxprune.workbench.train import barrier, is_main_process

    if not is_main_process():
        barrier()
        return
    _write_checkpoint(start, torch_model, path)
    barrier()


def _write_checkpoint(start: Model, torch_model: TorchModel, path: Path) -> None:
    torch_model.module.eval()
    # the masked weight attribute is refreshed by the forward pre-hook: run one forward first
    expected = reference(torch_model.module, start.input)
    values = torch_model.initializer_values(start)
    save_model_file(
        path, start.proto, values, external_data=start.external_data, check=lambda temp: verify(temp, expected)
    )


def _layer_sparsity(model: Model) -> dict[str, float]:
    return {layer.name: float(np.count_nonzero(model.weight_array(layer) == 0)) / layer.numel for layer in model.layers}


def _finish(
    folder: Path, options: ScheduleOptions, records: list[RoundRecord], val: Dataset | None, preprocess: Preprocess
) -> tuple[Path, float | None]:
    last = records[-1]
    final_top1 = None
    if val is not None:
        final_top1 = evaluate(load(folder / last.checkpoint), val, preprocess, engine="onnxruntime").top1
    accuracy = f"{final_top1:.3f}" if final_top1 is not None else "na"
    kind = traits(options.prune).kind
    name = f"{options.name}_{kind}_{options.target_label}_acc_{accuracy}.onnx"  # the folder's number
    final = folder / name
    from onnxprune.workbench.train import barrier, is_main_process

    if is_main_process():
        for stale in folder.glob(f"{options.name}_{kind}_*.onnx"):
            stale.unlink()
        shutil.copyfile(folder / last.checkpoint, final)
    barrier()
    return final, final_top1


def _write_results(
    folder: Path,
    identity: dict,
    baseline: float | None,
    records: list[RoundRecord],
    final: dict | None,
    val: Dataset | None = None,
) -> None:
    """results.json / .csv / .mat in the common schema: a row per round, the rounds in full under `extra`."""
    options = identity["options"]
    layer_names = list(records[0].layer_sparsity) if records else []
    table = ResultTable(
        kind="schedule",
        model=identity["model"],
        layer_names=layer_names,
        baseline_accuracy=baseline,
        units="channels" if identity["kind"] == "filter" else "weights",
        rows=[
            ResultRow(
                sparsity=record.sparsity,
                accuracy=record.top1,
                loss=record.loss,
                num_nonzero=record.num_nonzero,
                method=options["prune"]["method"],
                scope=options["prune"]["scope"],
                layer_sparsity=[record.layer_sparsity[name] for name in layer_names],
            )
            for record in records
        ],
        extra={
            "model_sha256": identity["model_sha256"],
            "schedule": options["schedule"],
            "iterations": options["iterations"],
            "target": options["prune"]["sparsity"],
            "rounds": [asdict(record) for record in records],
            "final": final,
            "val_samples": len(val) if val is not None else None,  # every top-1 of the run is measured on these
        },
    )
    write_results(table, folder)


def _write_json(path: Path, document: dict) -> None:
    save_atomic(lambda temp: Path(temp).write_text(json.dumps(document, indent=2)), path)
