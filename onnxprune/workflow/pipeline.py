"""One entry point for a prune, in whichever mode its options imply.

`run(model_path, RunOptions(...))` is what `onnxprune prune`, the MATLAB bridge and Python users
call. The mode follows from the options:

- **choose**: `max_drop` sweeps the method on the data and takes the highest sparsity within
  that accuracy drop, then goes on in one of the two modes below with it;
- **schedule**: data, fine-tuning, several rounds, slimming's sparsity training or `resume`:
  `onnxprune.workflow.schedule.run` (checkpoints and results in `out_dir`), then the final model is
  written to `output` too;
- **one-shot**: the model pruned once (a method or a hybrid recipe) and written to `output`.

Every option takes effect in every mode it is accepted in; the others are refused by
`RunOptions` in one line that names the option (no option is silently dropped).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from onnxprune.errors import ConfigError
from onnxprune.options import (
    ADAM_LR,
    DISTILL_WEIGHT,
    RAW_PIXEL_LR,
    SGD_LR,
    DataOptions,
    PruneOptions,
    ScheduleOptions,
    TrainOptions,
)
from onnxprune.pruning.methods import check_schedule, default_scope, get_method, traits

if TYPE_CHECKING:
    from onnxprune.graph.model import Model
    from onnxprune.pruning.oneshot import PruneResult
    from onnxprune.results import ResultTable
    from onnxprune.workbench.data import Dataset, Preprocess
    from onnxprune.workflow.schedule import ScheduleResult

Progress = Callable[[dict], None]


class Notes(list):
    """The run's notes, each handed to `on_note` as it is made.

    The CLI prints a note the moment it exists, so what a run chose (scope, optimizer, learning
    rate, the preprocessing) is on screen before the long work it governs, and stays there after Ctrl-C.
    """

    def __init__(self, on_note: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.on_note = on_note

    def append(self, note: str) -> None:
        """Keep `note` and announce it."""
        super().append(note)
        if self.on_note is not None:
            self.on_note(note)

    def extend(self, notes) -> None:
        """Keep and announce each of `notes`, in order."""
        for note in notes:
            self.append(note)


# The training options a user may leave to onnxprune; `measured_defaults` chooses them
# (benchmarks/versus_anchors.py). The scope left unset is None in `PruneOptions`: `default_scope`.
CHOSEN = frozenset({"optimizer", "lr", "distill_weight", "reconstruct"})


def measured_defaults(
    schedule: ScheduleOptions, unset: frozenset, raw_pixels: bool, unmeasured: str | None = "give --data to measure it"
) -> tuple[ScheduleOptions, list]:
    """The defaults measured best, for the options in `unset` (docs/benchmarks.md, issue 15).

    - scope, when `PruneOptions.scope` is None and was not measured (`_measured_choices`):
      `onnxprune.pruning.methods.default_scope` (lamp, or global when fine-tuning normalised
      inputs; layer for structured methods and recipes).
    - optimizer and learning rate when fine-tuning: Adam (AdamW) at 1e-3 for raw 0-255 inputs
      (MATLAB MLP +7.6 / +1.1 points, AlexNet-shaped +14 / +8 over SGD 1e-4), else SGD at 0.01.
    - distillation from the dense model when fine-tuning: weight 0.9, T = 4 (VGG13 +0.36 points,
      +0.26 at equal wall time; MATLAB MLP +2).

    `unmeasured`: why the default scope was not measured on this model, for its note (None: no note,
    as when --max-drop's sweep compares the scopes and says so itself).

    Returns the schedule with those choices and one note per choice.
    """
    prune, train = schedule.prune, schedule.train
    fine_tunes = train.epochs > 0
    notes = []
    if prune.scope is None:
        prune = dataclasses.replace(prune, scope=default_scope(prune, fine_tunes, raw_pixels))
        if traits(prune).kind == "unstructured" and not prune.is_recipe and unmeasured is not None:
            notes.append(
                f"scope {prune.scope}: the default measured on reference models, not on this one ({unmeasured}, "
                "or set --scope)"
                if not fine_tunes
                else f"scope {prune.scope}: the default measured on reference models for fine-tuning (set --scope)"
            )
    if fine_tunes:
        train, training_notes = measured_training(train, unset, raw_pixels)
        notes += training_notes
    return dataclasses.replace(schedule, prune=prune, train=train), notes


def measured_training(train: TrainOptions, unset: frozenset, raw_pixels: bool) -> tuple[TrainOptions, list[str]]:
    """The fine-tuning defaults measured best (`measured_defaults`), for the options in `unset`; and their note.

    `onnxprune finetune` uses this alone: it has no scope to choose.
    """
    changes = {}
    if "optimizer" in unset and raw_pixels:
        changes["optimizer"] = "adam"
    optimizer = changes.get("optimizer", train.optimizer)
    if "lr" in unset:
        changes["lr"] = ADAM_LR if optimizer == "adam" else RAW_PIXEL_LR if raw_pixels else SGD_LR
    if "distill_weight" in unset:
        changes["distill_weight"] = DISTILL_WEIGHT
    train = dataclasses.replace(train, **changes)
    inputs = "raw 0-255 inputs" if raw_pixels else "normalised inputs"
    note = (
        f"{inputs}: {train.optimizer} at learning rate {train.lr:g}"
        + (f", distilling from the dense model (weight {train.distill_weight:g})" if train.distill_weight else "")
        + " (measured defaults: the options choose otherwise)"
    )
    return train, [note]


@dataclass(frozen=True)
class RunOptions:
    """One prune: what, how often, on which data, and where the results go.

    Attributes:
        schedule: `ScheduleOptions` (holding `PruneOptions` and `TrainOptions`).
        data: `DataOptions`, or None for data-free pruning.
        output: the final model's path (default: beside the input, named after the method).
        out_dir: schedule mode: the folder of checkpoints and results (default: beside the output).
        resume: schedule mode: continue the run in `out_dir`.
        sparse_storage: store the output's weights as sparse initializers where smaller.
        max_drop: choose the sparsity: the highest within this accuracy drop on the data.
        levels: the sparsities `max_drop` tries (default 0, 0.05, ..., 0.95).
        unset: the options of `CHOSEN` the user did not give; `measured_defaults` chooses them
            once the model (raw 0-255 inputs or not) is known.
        command: the command line, recorded in the run folder for its report.
    """

    schedule: ScheduleOptions = field(default_factory=ScheduleOptions)
    data: DataOptions | None = None
    output: Path | None = None
    out_dir: Path | None = None
    resume: bool = False
    sparse_storage: bool = False
    max_drop: float | None = None
    levels: tuple[float, ...] | None = None
    unset: frozenset = frozenset()
    command: str | None = None

    def __post_init__(self) -> None:
        check_schedule(self.schedule)  # unknown methods, and what rewinding or gradual pruning cannot do
        prune, train = self.schedule.prune, self.schedule.train
        if self.max_drop is not None:
            if not self.has_data:
                raise ConfigError("--max-drop needs --data to measure accuracy on")
            if prune.is_recipe:
                raise ConfigError("--max-drop chooses one method's sparsity; a hybrid recipe carries its own")
            if not 0 <= self.max_drop < 1:
                raise ConfigError(f"--max-drop must be in [0, 1) (0.01 is one point), got {self.max_drop}")
        elif self.levels is not None:
            raise ConfigError("--sparsities lists the levels --max-drop tries; give --max-drop, or use sweep")
        if not self.has_data:
            for option, given, what in (
                ("--finetune-epochs", train.epochs > 0, "trains"),
                ("--sparsity-epochs", self.schedule.sparsity_epochs > 0, "trains"),
                (f"--method {prune.method}", traits(prune).needs_data, "scores"),
                ("--reconstruct", prune.reconstruct, "solves each layer"),
            ):
                if given:
                    raise ConfigError(f"{option} {what} on data: give --data")
        if self.mode == "one-shot" and (self.out_dir is not None or self.resume):
            option = "--resume" if self.resume else "--out-dir"
            raise ConfigError(
                f"{option} holds the checkpoints of a run with --data, --finetune-epochs or --iterations; "
                "a one-shot prune writes only -o"
            )

    def chooses_reconstruction(self, ignore_given: bool = False) -> bool:
        """True when the run measures whether to reconstruct (`_measured_choices`): data, nothing trained.

        `ignore_given`: whether it would, had --reconstruct/--no-reconstruct not been given.
        """
        return (ignore_given or "reconstruct" in self.unset) and _measurable(self)

    @property
    def has_data(self) -> bool:
        """True when samples were given (`data` with a path)."""
        return self.data is not None and self.data.path is not None

    @property
    def mode(self) -> str:
        """The mode the options imply: "schedule" or "one-shot" (after `max_drop` chose the sparsity)."""
        schedule = self.schedule
        if (
            self.max_drop is not None
            and schedule.train.epochs == 0
            and schedule.iterations == 1
            and not schedule.prune.reconstruct
        ):
            return "one-shot"  # the data chose the sparsity; nothing trains
        if self.has_data or schedule.iterations > 1 or self.resume or schedule.train.epochs > 0:
            return "schedule"
        return "one-shot"


@dataclass
class PruneReport:
    """What a prune did, in any mode.

    Attributes:
        output: the final model's path.
        mode: "schedule" or "one-shot".
        options: the `RunOptions`, with the sparsity `max_drop` chose and the learning rate used.
        result: one-shot: the `onnxprune.pruning.oneshot.PruneResult` (reports only; its tensors released).
        schedule: schedule mode: the `onnxprune.workflow.schedule.ScheduleResult`.
        choice: with `max_drop`: the sweep's choice ({"sparsity", "accuracy", ...}) and baseline.
        notes: what the user should know (preprocessing, learning rate, choices made).
        sparse_initializers: weights stored as sparse initializers in `output`.
        max_abs_diff: the written model against the torch model that produced it.
        bytes: the output's size, external data included.
        evaluated_on: schedule mode: the samples every top-1 of the run is measured on, in words
            ("400 images held out from --data", "10,000 images of --val").
    """

    output: Path
    mode: str
    options: RunOptions
    result: PruneResult | None = None
    schedule: ScheduleResult | None = None
    choice: dict | None = None
    notes: list[str] = field(default_factory=list)
    sparse_initializers: list[str] = field(default_factory=list)
    max_abs_diff: float | None = None
    bytes: int = 0
    evaluated_on: str | None = None


def run(
    model_path: str | os.PathLike, options: RunOptions, progress: Progress | None = None,
    level_progress: Progress | None = None, on_note: Callable[[str], None] | None = None,
) -> PruneReport:  # fmt: skip
    """Prune the model at `model_path` as `options` say; see the module docstring for the modes.

    Args:
        model_path: the .onnx file (never modified).
        options: `RunOptions`.
        progress: called with the schedule's and fine-tuning's progress events.
        level_progress: called with the `max_drop` sweep's progress events.
        on_note: called with each note as it is made, before the work it concerns (the report
            holds them all again, with the notes of the outcome).

    Returns:
        A `PruneReport`.
    """
    from onnxprune.graph.model import load
    from onnxprune.pruning.oneshot import default_output

    model_path = Path(model_path)
    model = load(model_path)  # a missing or corrupt file fails here, before anything else
    _check_conversion(model, options)
    notes = Notes(on_note)
    loaded: dict = {}  # the data files read once, for the measurements and the prune
    options, measured = _measured_choices(model, options, loaded)
    notes.extend(measured)
    choice, swept = None, None
    if options.max_drop is not None:  # the dense model is checked before any note on what the run will do
        _refuse_near_chance_baseline(model, options, loaded)
    if options.unset or options.schedule.prune.scope is None:
        raw_pixels = _raw_pixels(model, options.data)
        unmeasured = (
            None if options.max_drop is not None  # its sweep compares the scopes, and its note says so
            else "it is measured on --data for a one-shot prune or a single round" if options.has_data
            else "give --data to measure it here"
        )  # fmt: skip
        schedule, chosen = measured_defaults(options.schedule, options.unset, raw_pixels, unmeasured)
        options = dataclasses.replace(options, schedule=schedule, unset=frozenset())
        notes.extend(chosen)
    if options.max_drop is not None:
        choice, swept = _choose_sparsity(model, options, level_progress, loaded)
        prune = dataclasses.replace(options.schedule.prune, sparsity=choice["sparsity"])
        options = dataclasses.replace(options, schedule=dataclasses.replace(options.schedule, prune=prune))
        notes.append(_trade_off_note(prune, choice, options.max_drop))
    schedule = options.schedule
    if _could_reconstruct(options):
        notes.append(
            "nothing fine-tunes this model: --reconstruct would solve the kept weights again on 512 of the "
            "samples (VGG13 at 80%: 84.81% instead of 68.26%; docs/methods.md)"
        )
    output = (
        Path(options.output)
        if options.output
        else default_output(model_path, schedule.target_label, schedule.prune.method)
    )
    if options.mode == "one-shot":
        report = _one_shot(model, output, options)
    else:
        del model
        report = _scheduled(model_path, output, options, progress, notes, loaded)
    report.choice = choice
    if swept is not None and report.schedule is not None:  # the sweep behind the sparsity, in the run's report
        _save_sweep(report.schedule.folder, swept, choice)
    report.notes = list(notes) + report.notes
    if options.sparse_storage:
        report.notes.append(_sparse_storage_note(model_path, report))
    return report


def _check_conversion(model: Model, options: RunOptions) -> None:
    """Before any work, a run that computes with the torch model refuses a conversion that differs, naming the node.

    A one-shot prune whose methods only read weights goes on (`onnxprune.pruning.oneshot`
    verifies it against onnxruntime instead); everything else runs the torch model: scoring on
    data or SynFlow, reconstruction, fine-tuning, and the measurements a prune with --data makes.
    """
    from onnxprune.workbench.convert import to_torch
    from onnxprune.workbench.fidelity import ConversionMismatch, mismatch_message

    prune, train = options.schedule.prune, options.schedule.train
    runs_model = traits(prune).runs_model or prune.reconstruct
    if options.mode == "one-shot" and not runs_model and options.max_drop is None:
        return
    try:
        to_torch(model)
    except ConversionMismatch as error:
        purpose = (
            f"--method {prune.method}" if traits(prune).runs_model
            else "fine-tuning" if train.epochs > 0 or options.schedule.sparsity_epochs > 0
            else "--reconstruct" if prune.reconstruct
            else "a prune with --data (it measures in torch; prune without --data, then `onnxprune evaluate`)"
        )  # fmt: skip
        raise ConversionMismatch(mismatch_message(error.check, purpose), error.torch_model, error.check) from None


# the scopes a prune with data measures, the measured-on-references default first (it wins ties)
CANDIDATE_SCOPES = {"weight": ("lamp", "global", "layer"), "channel": ("layer", "global")}
# the most samples a scope is measured on (stratified): 2 standard errors ~1.4 points at 50% top-1
MEASURE_SAMPLES = 5000


def _scope_measurable(options: RunOptions) -> bool:
    """Whether the scope can be measured for this run: data, one plain method pruned once.

    Fine-tuning after the prune is allowed (the candidates are ranked before it); iterative or
    gradual schedules are not (their scope acts at every round), nor `--max-drop` (its sweep
    compares scopes itself), a method that scores on data or selects in rounds, per-layer ratios,
    a recipe or skipped layers.
    """
    schedule, prune = options.schedule, options.schedule.prune
    if not options.has_data or options.max_drop is not None or schedule.sparsity_epochs > 0 or schedule.iterations > 1:
        return False
    if prune.budget is not None:  # the budget allocates the channels itself
        return False
    if prune.is_recipe or prune.config or prune.skip_first or prune.skip_last:
        return False
    method = get_method(prune.method)
    return not method.needs_data and method.loop is None


def _measurable(options: RunOptions) -> bool:
    """Whether reconstruction can be measured for this run: the scope's conditions, nothing trained."""
    return _scope_measurable(options) and options.schedule.train.epochs == 0 and not options.resume


def _measured_choices(model: Model, options: RunOptions, loaded: dict) -> tuple[RunOptions, list[str]]:
    """With data: the scope and, when nothing is trained, whether to reconstruct, measured on the model.

    Each candidate scope is set at the requested sparsity from one ranking (`onnxprune.pruning.levels`)
    and evaluated on the run's validation samples (--val; the split fine-tuning holds out; without
    fine-tuning the samples of --data less 512 held out to reconstruct on; at most
    `MEASURE_SAMPLES`); the best is used when it beats the reference default (the first candidate)
    by more than the samples' sampling noise. With fine-tuning the candidates are ranked before
    it: on the defaults matrix (docs/benchmarks.md) this picks within 0.2 point of the best scope
    after one epoch on every model, where the reference rule (global for normalised inputs)
    missed by 1.5. Reconstruction of the best is then measured the same way when nothing is
    trained, and chosen when it gains more than the sampling noise. Nothing is measured where the
    user chose or for the runs `_scope_measurable` excludes.
    """
    from onnxprune.errors import DataError, UnreachableLevel
    from onnxprune.measure.sweep import Sweeper
    from onnxprune.pruning.reconstruct import calibration_split
    from onnxprune.workbench.data import prepare, stratified_sample
    from onnxprune.workbench.metrics import sampling_noise

    prune = options.schedule.prune
    scope_open, reconstruct_open = prune.scope is None, options.chooses_reconstruction()
    if not _scope_measurable(options) or not (scope_open or reconstruct_open):
        return options, []
    trains = options.schedule.train.epochs > 0
    preprocess, _, validation = prepare(model, options.data, 0.2 if trains else 0.0, loaded)
    calibration = None
    if reconstruct_open:
        try:
            calibration, validation = calibration_split(validation, seed=prune.seed)
        except DataError:  # too few samples to hold some out: reconstruction is not measured
            reconstruct_open = False
    if len(validation) > MEASURE_SAMPLES:
        validation = validation.subset(stratified_sample(validation.labels, MEASURE_SAMPLES, prune.seed))
    sweeper = Sweeper(model, validation, preprocess, engine="torch", calibration=calibration)
    granularity = get_method(prune.method).granularity
    measured = {}
    for scope in CANDIDATE_SCOPES[granularity] if scope_open else (prune.scope,):
        try:
            measured[scope] = sweeper.level(prune.method, scope, prune.sparsity, prune.max_layer_sparsity,
                                            reconstruct=False).accuracy  # fmt: skip
        except UnreachableLevel:
            continue
    if not measured:
        return options, []
    best = max(measured, key=lambda scope: measured[scope])  # the first candidate on a tie
    reference = next(iter(measured))  # the default measured on the reference models
    noise = sampling_noise(measured[reference], len(validation))
    if measured[best] - measured[reference] <= noise:  # within the noise of these samples: the reference holds
        best = reference
    notes = []
    if scope_open:
        shown = ", ".join(f"{scope} {top1:.2%}" for scope, top1 in measured.items())
        verdict = "measured best" if best != reference else "kept: no candidate beats it beyond the sampling noise"
        where = "of the validation split, before fine-tuning" if trains else "of --data"
        notes.append(f"scope {best}: {verdict} at {prune.sparsity:.0%} on {len(validation)} samples {where} "
                     f"({shown}; noise {noise:.1%}); --scope chooses")  # fmt: skip
    reconstruct = False
    if reconstruct_open:
        solved = sweeper.level(prune.method, best, prune.sparsity, prune.max_layer_sparsity).accuracy
        margin = sampling_noise(measured[best], len(validation))
        reconstruct = solved > measured[best] + margin
        verdict = "reconstructing" if reconstruct else "not reconstructing (within the sampling noise)"
        notes.append(
            f"reconstruction measured at {prune.sparsity:.0%} (scope {best}) on {len(validation)} samples: "
            f"{measured[best]:.2%} as pruned, {solved:.2%} with the kept weights solved again on "
            f"{len(calibration)} others (noise {margin:.1%}): {verdict}; --reconstruct/--no-reconstruct choose"
        )
    chosen = dataclasses.replace(prune, scope=best, reconstruct=reconstruct or prune.reconstruct)
    unset = options.unset if trains else options.unset - {"reconstruct"}  # measured, or nothing to measure on
    return dataclasses.replace(
        options, schedule=dataclasses.replace(options.schedule, prune=chosen), unset=unset
    ), notes


def _could_reconstruct(options: RunOptions) -> bool:
    """Pruning with data and no training, without --reconstruct: where it would help most."""
    schedule = options.schedule
    trains = schedule.train.epochs > 0 or schedule.sparsity_epochs > 0  # gradual and --rewind need it too
    chosen = "reconstruct" not in options.unset  # given, or measured (`_measured_choices`)
    return options.has_data and not schedule.prune.reconstruct and not trains and not chosen


def _sparse_storage_note(model_path: Path, report: PruneReport) -> str:
    """What --sparse-storage saved, and why it may save nothing."""
    from onnxprune.graph.model import model_file_size

    before = model_file_size(model_path)
    if not report.sparse_initializers:
        return (
            f"--sparse-storage stored no weight sparse: the file is the dense size ({before:,} bytes); "
            "a weight pays only above ~67% sparsity (each kept value costs an int64 index)"
        )
    return (
        f"--sparse-storage: {len(report.sparse_initializers)} weight(s) stored sparse, {before:,} -> "
        f"{report.bytes:,} bytes (weights below ~67% sparsity stay dense: int64 indices)"
    )


def _raw_pixels(model: Model, data: DataOptions | None) -> bool:
    """Whether the model is fed raw 0-255 values (MATLAB's mean-image exports, or --pixel-range 0-255)."""
    from onnxprune.workbench.data import preprocess_for

    pixel_range = data.pixel_range if data is not None else None
    return preprocess_for(model, pixel_range).pixel_range == "0-255"


def _choose_sparsity(
    model: Model, options: RunOptions, level_progress: Progress | None, loaded: dict
) -> tuple[dict, ResultTable]:
    """Sweep the method in the run's scope and in the other of layer/global; the run's scope decides.

    Returns:
        `measure.sweep.trade_off` in the run's scope, with "baseline", "samples" and "other" (the
        trade-off the other scope would have given: users compare it with the sweep they ran); and
        the sweep's table.
    """
    from onnxprune.measure.sweep import grid, sweep, trade_off
    from onnxprune.pruning.reconstruct import calibration_split
    from onnxprune.workbench.data import prepare

    prune = options.schedule.prune
    other = "global" if prune.scope == "layer" else "layer"
    evaluation = dataclasses.replace(options.data, val=None, val_split=None)
    preprocess, dataset, _ = prepare(model, evaluation, 0.0, loaded)
    calibration = None
    if prune.reconstruct:  # the levels are measured on samples their layers were not solved on
        calibration, dataset = calibration_split(dataset, seed=prune.seed)
    levels = list(options.levels) if options.levels else grid(0.0, 0.95, 0.05)
    table = sweep(model, dataset, preprocess, levels, [prune.method], [prune.scope, other], prune.max_layer_sparsity,
                  progress=level_progress, calibration=calibration)  # fmt: skip
    choice = trade_off(table, options.max_drop, scope=prune.scope)
    if choice["sparsity"] <= 0:
        raise ConfigError(
            f"no sparsity level keeps accuracy within {options.max_drop} of the dense model; raise --max-drop"
        )
    other_choice = {**trade_off(table, options.max_drop, scope=other), "scope": other}  # its scope, even if empty
    return {**choice, "baseline": table.baseline_accuracy, "samples": len(dataset), "other": other_choice}, table


def _save_sweep(folder: Path, table: ResultTable, choice: dict) -> None:
    """The sweep `--max-drop` chose on, in the run's folder (results, figure), and the run's report again with it.

    `onnxprune.report.html` shows it before the rounds: the levels tried, the budget, the level chosen.
    """
    from onnxprune.report import plots
    from onnxprune.report.html import CHOICE_FOLDER, write_report
    from onnxprune.results import write as write_results
    from onnxprune.workbench.train import is_main_process

    if not is_main_process():  # under torchrun, rank 0 writes the run's folder
        return
    table.extra.update(trade_off=choice, chose="prune --max-drop")
    write_results(table, folder / CHOICE_FOLDER)
    plots.accuracy_vs_sparsity([table], folder / CHOICE_FOLDER / "accuracy_vs_sparsity.png")
    write_report(folder)


def _refuse_near_chance_baseline(model: Model, options: RunOptions, loaded: dict) -> None:
    """`--max-drop`'s check of the dense model on its data (`_refuse_near_chance`), before any other work."""
    from onnxprune.workbench.data import prepare

    preprocess, dataset, _ = prepare(model, dataclasses.replace(options.data, val=None, val_split=None), 0.0, loaded)
    _refuse_near_chance(model, dataset, preprocess, "--max-drop")


def _refuse_near_chance(model: Model, dataset: Dataset, preprocess: Preprocess, option: str) -> None:
    """Refuse an accuracy-based choice whose dense baseline is near chance: it would choose on noise."""
    from onnxprune.workbench.evaluate import chance_note, evaluate

    top1 = evaluate(model, dataset, preprocess).top1
    note = chance_note(top1, model.num_classes or len(dataset.classes), preprocess.layout == "flat")
    if note:
        raise ConfigError(f"{option} chooses by accuracy, but the dense model's {note}")


def _trade_off_note(prune: PruneOptions, choice: dict, max_drop: float) -> str:
    """The chosen level, the scope it was chosen in, and what the other scope would have given."""
    other = choice["other"]
    reaches = (
        f"reaches {other['sparsity']:.1%} (top-1 {other['accuracy']:.2%})"
        if other["method"] is not None
        else "keeps no level within the budget"
    )
    return (
        f"trade-off ({prune.method}, scope {prune.scope}): {choice['sparsity']:.1%} of the {choice['units']} keeps "
        f"top-1 {choice['accuracy']:.2%} within {max_drop:.1%} of the dense {choice['baseline']:.2%} (on all "
        f"{choice['samples']} images of --data); "
        f"with --scope {other['scope']} the same sweep {reaches}"
    )


def _one_shot(model: Model, output: Path, options: RunOptions) -> PruneReport:
    from onnxprune.graph.model import check_output_path, model_file_size
    from onnxprune.pruning.oneshot import PruneInputs, prune_with, save

    check_output_path(model, output)
    # nothing trains: the zeros are the mask
    result = prune_with(model, options.schedule.prune, PruneInputs(keep_masks=False))
    del model  # with release=True, save frees the last references once the file is written
    verification = save(result, output, sparse_storage=options.sparse_storage, release=True)
    return PruneReport(
        output=output, mode="one-shot", options=options, result=result, notes=list(result.notes),
        sparse_initializers=result.sparse_initializers, max_abs_diff=verification.max_abs_diff,
        bytes=model_file_size(output),
    )  # fmt: skip


def _scheduled(
    model_path: Path,
    output: Path,
    options: RunOptions,
    progress: Progress | None,
    notes: list[str],
    loaded: dict | None = None,
) -> PruneReport:
    from onnxprune.graph.model import check_output_path, load, model_file_size
    from onnxprune.workbench.data import prepare
    from onnxprune.workflow.schedule import run as run_schedule

    schedule = options.schedule
    model = load(model_path)
    if options.output is not None or options.sparse_storage:
        check_output_path(model, output)
    trains = schedule.train.epochs > 0 or traits(schedule.prune).needs_data or schedule.sparsity_epochs > 0
    # what the run fits (weights, scores, reconstructed layers) is measured on samples held out from it
    fits = trains or schedule.prune.reconstruct
    preprocess, train, held_out = prepare(model, options.data or DataOptions(), 0.2 if fits else 0.0, loaded)
    notes.extend(preprocess.notes)
    out_dir = Path(options.out_dir) if options.out_dir else output.with_name(
        f"{model_path.stem}_{schedule.name}_{schedule.target_label}"
    )  # fmt: skip
    result = run_schedule(
        model_path, out_dir, schedule, train, held_out, preprocess, options.resume, progress, options.command
    )
    final = load(result.final_path)
    from onnxprune.workbench.evaluate import chance_note

    classes = model.num_classes or (len(held_out.classes) if held_out else 0)
    chance = chance_note(result.baseline_top1, classes, preprocess.layout == "flat")
    notes.extend([chance] if chance else [])
    far = _far_below_dense(result, schedule, len(train) if train is not None else 0)
    notes.extend([far] if far and not chance else [])
    notes.append(f"checkpoints, results.json/.csv and report.html in {result.folder}")
    evaluated_on = evaluation_split(options.data, len(held_out) if held_out is not None else 0, fits)
    if options.output is None and not options.sparse_storage:  # the run's own final file is the output
        return PruneReport(
            output=result.final_path, mode="schedule", options=options, schedule=result,
            bytes=model_file_size(result.final_path), evaluated_on=evaluated_on,
        )  # fmt: skip
    moved, difference = _write_final(final, output, options.sparse_storage)
    return PruneReport(
        output=output, mode="schedule", options=options, schedule=result, notes=[],
        sparse_initializers=moved, max_abs_diff=difference, bytes=model_file_size(output), evaluated_on=evaluated_on,
    )  # fmt: skip


def evaluation_split(data: DataOptions | None, samples: int, split: bool) -> str | None:
    """The samples a run's accuracies are measured on, in words: which split of which data, and how many.

    `split`: whether the run held part of --data out (it fits weights, scores or layers on the rest).
    """
    if not samples or data is None:
        return None
    if data.val is not None:
        return f"{samples:,} images of --val"
    if split or data.val_split:
        return f"{samples:,} images held out from --data"
    return f"{samples:,} images of --data"


# a fine-tuned result this far below the dense model (absolute top-1) gets a note with what to try
FAR_BELOW_DENSE = 0.10


def _far_below_dense(result: ScheduleResult, schedule: ScheduleOptions, train_samples: int) -> str | None:
    """A note when fine-tuning left the model far below the dense one: what to try next."""
    if schedule.train.epochs == 0 or result.final_top1 is None or result.baseline_top1 is None:
        return None
    drop = result.baseline_top1 - result.final_top1
    if drop <= FAR_BELOW_DENSE:
        return None
    return (
        f"after fine-tuning, top-1 {result.final_top1:.2%} is {100 * drop:.1f} points below the dense "
        f"{result.baseline_top1:.2%} (on {result.val_samples} validation images): try more training data (this "
        f"run had {train_samples} images), more --finetune-epochs (it had {schedule.train.epochs}), or "
        + (f"a lower --sparsity than {schedule.target:g}" if schedule.prune.budget is None else "a smaller budget")
    )


def _write_final(final: Model, output: Path, sparse_storage: bool) -> tuple[list[str], float]:
    """The run's final model written to `output` (sparse storage if asked), checked against it."""
    from onnxprune.graph.proto import session
    from onnxprune.graph.storage import save_model_file
    from onnxprune.graph.verify import Reference, random_batch, verify

    inputs = random_batch(final.input, 2)
    source = session(final.path)
    expected = Reference(inputs, source.run(None, {source.get_inputs()[0].name: inputs}))
    reports = []
    candidates = [layer.weight for layer in final.layers] if sparse_storage else []
    moved = save_model_file(
        output, final.proto, sparse_candidates=candidates, external_data=final.external_data,
        check=lambda path: reports.append(verify(path, expected)),
    )  # fmt: skip
    return moved, reports[0].max_abs_diff
