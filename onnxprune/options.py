"""Every option of a prune, typed once and validated once.

The CLI, the Python API, the schedule and the MATLAB bridge all build these; nothing else lists
the options again. `PruneOptions` says what to remove, `TrainOptions` how to fine-tune,
`ScheduleOptions` how often (it holds the two others), `DataOptions` where the samples come from
and how they become the model's input.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from onnxprune.errors import ConfigError

SCOPES = ("layer", "global", "lamp", "erk")
SCHEDULES = ("geometric", "cubic", "gradual")
LR_SCHEDULES = ("rewind", "continue")
OPTIMIZERS = ("sgd", "adam")
# the guard against layer collapse: global selection leaves every layer at least 1% of its weights
DEFAULT_MAX_LAYER_SPARSITY = 0.99
# structured pruning leaves layers of 32+ channels a multiple of this (fast kernels on 8-wide SIMD)
DEFAULT_ROUND_TO = 8
# fine-tuning's learning rates, measured (docs/training.md#the-defaults-measured): SGD on normalised
# inputs; raw 0-255 inputs (MATLAB exports with a mean-image Sub) make first-layer gradients ~255x
# larger, so SGD there takes 1e-4 and Adam (AdamW) 1e-3
SGD_LR = 0.01
RAW_PIXEL_LR = 1e-4
ADAM_LR = 1e-3
# distillation from the dense model when a prune fine-tunes (VGG13 +0.36 points, MATLAB MLP +2)
DISTILL_WEIGHT = 0.9
# slimming's sparsity training: the L1 penalty on BatchNorm scales when none is given
SLIMMING_BN_L1 = 1e-4


def check_sparsity(value: float, what: str = "sparsity") -> float:
    """Validate a sparsity in [0, 1); return it as float."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= value < 1.0 or math.isnan(value):
        raise ConfigError(f"{what} must be in [0, 1) (0.9 removes 90% of the weights), got {value}")
    return value


def check_scope(scope: str) -> str:
    """Refuse a scope that is not one of `SCOPES`."""
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, got '{scope}'")
    return scope


def parse_recipe(text: str) -> list[tuple[str, float]]:
    """'l1-filter:0.3,magnitude:0.8' -> [('l1-filter', 0.3), ('magnitude', 0.8)] (a hybrid chain).

    Also reads a YAML file holding a list of {method, sparsity} stages. The syntax and the
    sparsities are checked here; the method names by the pruning registry when the prune starts
    (`onnxprune.pruning.methods.traits`).
    """
    import yaml  # a recipe file is rare: `onnxprune --help` does not wait for it

    if text.endswith((".yaml", ".yml")):
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"{path}: no such recipe file")
        stages = yaml.safe_load(path.read_text())
        if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
            raise ConfigError(f"{path}: a recipe is a list of stages like '- {{method: l1-filter, sparsity: 0.3}}'")
        pairs = [(str(s.get("method")), s.get("sparsity")) for s in stages]
    else:
        pairs = []
        for part in text.split(","):
            name, _, value = part.strip().partition(":")
            if not value:
                raise ConfigError(f"recipe stage '{part.strip()}' needs a sparsity, like magnitude:0.8")
            pairs.append((name.strip(), value))
    if not pairs:
        raise ConfigError("an empty recipe: give stages like l1-filter:0.3,magnitude:0.8")
    return [(name, check_sparsity(value, f"sparsity of stage '{name}'")) for name, value in pairs]


@dataclass(frozen=True)
class MethodSettings:
    """The knobs of the data-driven and iterative methods; each method reads its own.

    Attributes:
        batches_per_round: taylor: mini-batches scored (and trained) per round.
        max_per_round: taylor: most filters removed per round.
        batch_size: taylor, sss, greedy: mini-batch size of their training steps.
        lr: taylor, sss, greedy: learning rate of their training steps.
        momentum: taylor, sss: SGD momentum.
        candidates: greedy: units tried per removal.
        val_samples: greedy: samples the loss is measured on.
        finetune_every: greedy: removals between short fine-tunings.
        finetune_batches: greedy: mini-batches per short fine-tuning.
        sss_epochs: sss: epochs of factor training.
        sss_gamma: sss: the L1 penalty on the factors.
        max_steps: sss: at most this many steps (None: whole epochs).
        synflow_iterations: synflow: scoring rounds.
    """

    batches_per_round: int = 10
    max_per_round: int = 8
    batch_size: int = 32
    lr: float = SGD_LR
    momentum: float = 0.9
    candidates: int = 16
    val_samples: int = 256
    finetune_every: int = 8
    finetune_batches: int = 5
    sss_epochs: int = 1
    sss_gamma: float = 1e-3
    max_steps: int | None = None
    synflow_iterations: int = 10

    def __post_init__(self):
        for name in ("batches_per_round", "max_per_round", "batch_size", "candidates", "val_samples",
                     "finetune_every", "synflow_iterations"):  # fmt: skip
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"method setting {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"method setting lr must be > 0, got {self.lr}")

    @classmethod
    def of(cls, value: MethodSettings | dict | None) -> MethodSettings:
        """Settings from a dict of some of the fields (unknown names refused, listing the known ones)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"unknown method setting '{unknown[0]}'; the settings are: {', '.join(sorted(known))}")
        return cls(**value)


@dataclass(frozen=True)
class PruneOptions:
    """What to prune and how, for every mode (one-shot, schedule, hybrid recipe).

    Attributes:
        sparsity: fraction of prunable weights removed (structured methods: of removable
            filters and neurons). Ignored by a recipe, whose stages carry their own.
        method: a registered method, or a hybrid recipe: stages like
            "l1-filter:0.3,magnitude:0.8", or a .yaml file listing {method, sparsity}.
        scope: "layer" (every layer to the sparsity), "global" (one threshold), "lamp" (one
            threshold over layer-adaptive scores) or "erk"; None (the default) is the measured
            choice, made where the prune starts (`onnxprune.pruning.methods.default_scope`).
        config: a YAML file of per-layer ratios ("conv1: 0.5", "default: 0.8").
        skip_first: leave the first prunable layer dense.
        skip_last: leave the last prunable layer dense.
        max_layer_sparsity: global scope and iterative methods: no layer pruned beyond this.
        mask_only: structured: zero channels whose dependencies cannot be resolved instead of
            refusing them.
        round_to: structured: layers of 32+ channels keep a multiple of this many (1: exact).
        settings: knobs of the data-driven and iterative methods (`MethodSettings`).
        seed: seeds the methods' sampling.
        reconstruct: after each pruning, solve every layer's kept weights again on samples of the
            data so that it reproduces the unpruned layer's outputs (`onnxprune.pruning.reconstruct`).
        speedup: structured: remove the channels that make the model this many times faster in
            onnxruntime, measured on this machine (`onnxprune.pruning.budget`); `sparsity` is then
            not used.
        target_macs: structured: remove channels until this fraction of the dense MACs is left.
        bench_batch_size: the batch size `speedup` is measured at.
        threads: the onnxruntime intra-op threads `speedup` is measured with (None: every core
            this process may use).
    """

    sparsity: float = 0.5
    method: str = "magnitude"
    scope: str | None = None
    config: str | None = None
    skip_first: bool = False
    skip_last: bool = False
    max_layer_sparsity: float = DEFAULT_MAX_LAYER_SPARSITY
    mask_only: bool = False
    round_to: int = DEFAULT_ROUND_TO
    settings: MethodSettings = field(default_factory=MethodSettings)
    seed: int = 0
    reconstruct: bool = False
    speedup: float | None = None
    target_macs: float | None = None
    bench_batch_size: int = 32
    threads: int | None = None

    def __post_init__(self):
        check_sparsity(self.sparsity)
        self._check_budget()
        check_sparsity(self.max_layer_sparsity, "max layer sparsity")
        if self.scope is not None:
            check_scope(self.scope)
        if self.round_to < 1:
            raise ConfigError(f"--round-to must be >= 1, got {self.round_to}")
        if self.config is not None and not Path(self.config).is_file():
            raise ConfigError(f"{self.config}: no such ratio file; check the --config path")
        object.__setattr__(self, "settings", MethodSettings.of(self.settings))
        _ = self.stages  # a recipe's syntax and sparsities fail here; its method names where the prune starts

    def _check_budget(self) -> None:
        """`speedup` and `target_macs`: in range, one at a time, and not with options they replace."""
        if self.speedup is not None and self.target_macs is not None:
            raise ConfigError("--speedup and --target-macs are two budgets: give one")
        if self.speedup is not None and not 1.0 < self.speedup <= 100:
            raise ConfigError(f"--speedup must be above 1 (times faster than the dense model), got {self.speedup:g}")
        if self.target_macs is not None and not 0.0 < self.target_macs < 1.0:
            raise ConfigError(f"--target-macs must be between 0 and 1 (of the dense MACs), got {self.target_macs:g}")
        if self.bench_batch_size < 1:
            raise ConfigError(f"--bench-batch-size must be 1 or more, got {self.bench_batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be 1 or more, got {self.threads}")
        if self.budget is None:
            return
        option = self.budget_option
        for given, name in ((self.config, "--config"), (self.skip_first, "--skip-first"),
                            (self.skip_last, "--skip-last"), (self.is_recipe, "a recipe")):  # fmt: skip
            if given:
                raise ConfigError(f"{option} chooses every layer's channels itself; it cannot be combined with {name}")

    @property
    def budget(self) -> tuple[str, float] | None:
        """("speedup", x) or ("macs", f) when the run prunes to a budget, else None."""
        if self.speedup is not None:
            return ("speedup", self.speedup)
        return ("macs", self.target_macs) if self.target_macs is not None else None

    @property
    def budget_option(self) -> str:
        """The option that set the budget ("--speedup" or "--target-macs"), for messages."""
        return "--speedup" if self.speedup is not None else "--target-macs"

    @property
    def is_recipe(self) -> bool:
        """True for a hybrid chain of methods (stages that carry their own sparsities)."""
        return ":" in self.method or self.method.endswith((".yaml", ".yml"))

    @functools.cached_property
    def stages(self) -> list[tuple[str, float]]:
        """(method, sparsity) per stage: the recipe's, or one stage of `method` at `sparsity`.

        Read once (a recipe may be a YAML file); every other property derives from it.
        """
        return parse_recipe(self.method) if self.is_recipe else [(self.method, self.sparsity)]

    @property
    def target(self) -> float:
        """The last stage's sparsity: what the run is named after."""
        return self.stages[-1][1]

    @property
    def target_label(self) -> str:
        """What files and folders are named after: "0.80", or the budget ("speedup2.00", "macs0.35")."""
        if self.budget is not None:
            kind, value = self.budget
            return f"{kind}{value:.2f}"
        return f"{self.target:.2f}"


@dataclass(frozen=True)
class TrainOptions:
    """Fine-tuning settings (SGD with momentum, cosine schedule).

    Attributes:
        epochs: passes over the training set.
        batch_size: samples per step.
        lr: initial learning rate, annealed to 0 by a cosine schedule.
        momentum: SGD momentum.
        weight_decay: L2 penalty (applied to the surviving weights; pruned ones stay zero).
        label_smoothing: cross-entropy label smoothing.
        augment: random horizontal flip and 4-pixel-padded random crop (image inputs only).
        seed: seeds shuffling, augmentation and dropout: the same seed gives the same model.
        device: "cpu", "cuda" or None (CUDA when available).
        max_steps: stop each epoch after this many steps (None: the whole epoch).
        bn_l1: Network Slimming's sparsity training: the subgradient bn_l1 x sign(gamma) is
            added to the gradient of every BatchNorm scale factor (0: off).
        distill_weight: knowledge distillation from the dense model (Hinton et al. 2015): the
            loss is (1 - w) x cross-entropy + w x T^2 x KL(teacher || student) at temperature T
            (0: off). The schedule's teacher is the unpruned source model.
        distill_temperature: T of the distillation loss.
        optimizer: "sgd" (with `momentum`) or "adam" (Adam with decoupled weight decay, AdamW).
        cosine_span: the part of one cosine learning-rate decay this fine-tuning runs through,
            (start, end) as fractions: (0, 1) decays from `lr` to 0; a schedule that continues
            across rounds gives round k of K the span ((k-1)/K, k/K).
    """

    epochs: int = 3
    batch_size: int = 32  # measured: docs/training.md#the-defaults-measured
    lr: float = SGD_LR
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: bool = True
    seed: int = 0
    device: str | None = None
    max_steps: int | None = None
    bn_l1: float = 0.0
    distill_weight: float = 0.0
    distill_temperature: float = 4.0
    cosine_span: tuple[float, float] = (0.0, 1.0)
    optimizer: str = "sgd"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'")
        start, end = self.cosine_span
        if not 0 <= start < end <= 1:
            raise ConfigError(f"the cosine span must satisfy 0 <= start < end <= 1, got {self.cosine_span}")
        if not 0 <= self.distill_weight <= 1:
            raise ConfigError(f"--distill-weight must be in [0, 1] (0: off), got {self.distill_weight}")
        if self.distill_temperature <= 0:
            raise ConfigError(f"--distill-temperature must be > 0, got {self.distill_temperature}")
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs must be >= 0, batch size >= 1 and the learning rate > 0")
        if self.bn_l1 < 0:
            raise ConfigError(f"the BatchNorm L1 penalty (lambda) must be > 0, got {self.bn_l1}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.device not in (None, "auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"--device must be cpu, cuda or cuda:N, got '{self.device}'")


@dataclass(frozen=True)
class ScheduleOptions:
    """How often to prune and how to fine-tune between rounds.

    Attributes:
        prune: what each round removes (`PruneOptions`; its sparsity is the final target).
        train: fine-tuning settings; `train.epochs == 0` prunes without fine-tuning.
        iterations: rounds; 1 is one-shot (OMP), 3 or more is iterative (IMP).
        schedule: "geometric" prunes the same fraction of what remains each round; "cubic" is
            Zhu & Gupta's s_k = s (1 - (1 - k/K)^3), pruning hardest early; "gradual" prunes
            while fine-tuning, the masks growing along that cubic ramp step by step
            (`onnxprune.pruning.gradual`; one round, weight methods).
        rewind: after each pruning, reset surviving weights to their original values (lottery
            ticket style) before fine-tuning.
        lr_schedule: "rewind" restarts the cosine learning-rate decay from `train.lr` in every
            round (learning-rate rewinding, Renda et al. 2020); "continue" runs one decay over
            all rounds, each round fine-tuning where the previous one left the learning rate.
        sparsity_epochs: slimming: epochs of sparsity training (L1 on BatchNorm scales,
            `bn_l1`) before the first pruning.
        bn_l1: slimming: the L1 penalty lambda on BatchNorm scales during sparsity training
            (None: `SLIMMING_BN_L1` with sparsity training, else 0).
    """

    prune: PruneOptions = field(default_factory=PruneOptions)
    train: TrainOptions = field(default_factory=lambda: TrainOptions(epochs=0))
    iterations: int = 1
    schedule: str = "geometric"
    rewind: bool = False
    lr_schedule: str = "rewind"
    sparsity_epochs: int = 0
    bn_l1: float | None = None

    def __post_init__(self):
        """Checks that need no method's traits; `onnxprune.pruning.methods.check_schedule` does the others."""
        if self.bn_l1 is None:
            object.__setattr__(self, "bn_l1", SLIMMING_BN_L1 if self.sparsity_epochs > 0 else 0.0)
        if self.iterations < 1:
            raise ConfigError(f"iterations must be >= 1, got {self.iterations}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got '{self.schedule}'")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got '{self.lr_schedule}'")
        if self.sparsity_epochs > 0 and self.bn_l1 <= 0:
            raise ConfigError(f"sparsity training needs a lambda > 0 (--bn-l1), got {self.bn_l1}")
        if self.prune.is_recipe and self.iterations > 1:
            raise ConfigError(
                "--iterations: a hybrid recipe runs its stages once; prune in rounds with a single method"
            )
        if self.schedule == "gradual":
            self._check_gradual()
        if self.rewind and self.prune.reconstruct:
            raise ConfigError("--rewind resets the surviving weights that --reconstruct solves: choose one")

    def _check_gradual(self) -> None:
        if self.iterations > 1:
            raise ConfigError("--schedule gradual prunes during one fine-tuning: leave --iterations at 1")
        if self.train.epochs == 0:
            raise ConfigError("--schedule gradual prunes while fine-tuning: add --finetune-epochs")
        if self.rewind:
            raise ConfigError("--rewind resets survivors after a pruning; --schedule gradual prunes while training")
        if self.prune.reconstruct:
            raise ConfigError(
                "--reconstruct solves the weights a pruning keeps; --schedule gradual prunes while training: "
                "use one-shot or --iterations"
            )

    @property
    def target(self) -> float:
        """The final sparsity."""
        return self.prune.target

    @property
    def target_label(self) -> str:
        """What the run's files are named after (`PruneOptions.target_label`)."""
        return self.prune.target_label

    @property
    def name(self) -> str:
        """The run's name: omp for one round, imp for several, gmp for gradual pruning."""
        if self.schedule == "gradual":
            return "gmp"
        return "omp" if self.iterations == 1 else "imp"

    def train_for_round(self, round_number: int) -> TrainOptions:
        """The fine-tuning settings of one round: its own seed, and its span of the learning-rate decay."""
        span = (0.0, 1.0)
        if self.lr_schedule == "continue":
            span = ((round_number - 1) / self.iterations, round_number / self.iterations)
        return dataclasses.replace(self.train, seed=self.train.seed + round_number, cosine_span=span)

    def sparsity_at(self, round_number: int) -> float:
        """The sparsity reached after round `round_number` (1-based)."""
        fraction = round_number / self.iterations
        if self.schedule == "cubic":
            return self.target * (1.0 - (1.0 - fraction) ** 3)
        return 1.0 - (1.0 - self.target) ** fraction


@dataclass(frozen=True)
class DataOptions:
    """Where samples come from and how they become the model's input.

    Attributes:
        path: a class-subfolder folder or .zip, .mat, .npz or MNIST idx file.
        val: validation data in the same formats (else `val_split` of `path`).
        val_split: fraction of `path` held out for validation.
        limit: use N samples of each source, drawn at random (seeded by `seed`) and evenly from
            the classes: class-folder archives list their images class by class.
        first: use the first N samples of each source, in the archive's order.
        pixel_range: "0-255" or "0-1" (None: 0-255 for MATLAB exports with a mean-image Sub).
        mean: per-channel mean after scaling.
        std: per-channel standard deviation.
        flatten: flat inputs: "row" (numpy order) or "column" (MATLAB's X(:) order); None is
            row order, and a value given for a model that flattens nothing is refused.
        seed: seeds the split.
    """

    path: str | None = None
    val: str | None = None
    val_split: float | None = None
    limit: int | None = None
    first: int | None = None
    pixel_range: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    flatten: str | None = None
    seed: int = 0

    def __post_init__(self):
        if self.path is None:  # they choose or prepare samples: without samples they would do nothing
            for option, value in (("--val", self.val), ("--val-split", self.val_split), ("--limit", self.limit),
                                  ("--first", self.first), ("--pixel-range", self.pixel_range), ("--mean", self.mean),
                                  ("--std", self.std), ("--flatten", self.flatten)):  # fmt: skip
                if value is not None:
                    raise ConfigError(f"{option} has no effect without --data: it describes the samples; give --data")
        if self.val_split is not None and not 0 <= self.val_split < 1:
            raise ConfigError(f"--val-split must be in [0, 1) (0: validate on the training data), got {self.val_split}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.first is not None and self.first < 1:
            raise ConfigError(f"--first must be >= 1, got {self.first}")
        if self.first is not None and self.limit is not None:
            raise ConfigError("--limit draws N evenly from the classes, --first takes the first N: give one of them")
        if self.flatten not in (None, "row", "column"):
            raise ConfigError(f"--flatten must be row or column, got '{self.flatten}'")
        if self.pixel_range not in (None, "0-255", "0-1"):
            raise ConfigError(f"--pixel-range must be 0-255 or 0-1, got '{self.pixel_range}'")
