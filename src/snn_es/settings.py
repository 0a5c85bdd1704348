"""Every run setting, defined once: the spiking network, the ES run, and how fast it executes.

Each field carries its default and a one-line description (``help``). The config sections
``snn``, ``es`` and ``execution`` hold exactly these fields; ``tests/test_settings.py`` checks
that the schema (``workflow/schemas/config.schema.yaml``) and ``config/config.yaml`` agree with
them key by key, default by default and description by description.

``SNNSettings`` and ``ESSettings`` decide the results: together with the dataset, subset,
encoder, mode and seed they make a run's canonical spec (``snn_es.config.expand_runs``).
``ExecutionSettings`` only decide how fast a run goes (the same results for any value, see
``tests/test_es.py``), so they never rerun a job.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

RESET_MECHANISMS = ("subtract", "zero")
SURROGATES = ("atan", "fast_sigmoid")
READOUTS = ("membrane", "spike_count")
SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adam", "sgd")
NOISE_SCALES = ("absolute", "layer")
FITNESSES = ("cross_entropy", "accuracy", "margin")
SPIKE_NOISE = ("shared", "per_member")
AUGMENTS = ("none", "flip", "flip_translate")
# Population evaluators (a run's `mode`; snn_es.es.evaluate). flip_delta is chunked with the
# flip-delta second layer, a mode of its own because its float32 rounding differs from
# chunked's (so a committed chunked run stays reproducible)
EVALUATORS = ("sequential", "chunked", "flip_delta")
# snnTorch's own defaults: atan(alpha=2.0), fast_sigmoid(slope=25).
DEFAULT_SURROGATE_SLOPE = {"atan": 2.0, "fast_sigmoid": 25.0}


def setting(default: Any, help: str, config: bool = True, added: bool = False) -> Any:
    """A dataclass field with its description; ``config=False``: set by the data, not the
    config (the input shape and the number of classes). ``added``: a setting added after
    runs were committed; at its default it is left out of the canonical spec, so those runs
    keep their spec (and their results) while any other value is part of it."""
    return field(default=default, metadata={"help": help, "config": config, "added": added})


def config_fields(cls) -> dict[str, Any]:
    """{name: dataclass Field} of the fields a config section may set, in order."""
    return {f.name: f for f in fields(cls) if f.metadata.get("config", True)}


def defaults(cls) -> dict[str, Any]:
    """The config section ``cls`` stands for, every key at its default (tuples as lists)."""
    out = {}
    for name, f in config_fields(cls).items():
        value = f.default if f.default is not MISSING else f.default_factory()
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _one_of(cls: str, name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{cls}.{name} must be one of {', '.join(valid)}; got {value!r}")


@dataclass(frozen=True)
class SNNSettings:
    """The spiking CNN: per conv layer Conv(k) -> MaxPool(2) -> LIF; then Linear -> LIF."""

    input_shape: tuple[int, int, int] = setting((3, 32, 32), "(C, H, W) of the images.",
                                                config=False)
    num_classes: int = setting(10, "Number of classes.", config=False)
    channels: tuple[int, ...] = setting(
        (16, 32), "Output channels of each conv layer (each followed by 2x2 max-pool and LIF).")
    kernel_size: int = setting(3, "Conv kernel size (odd).")
    num_steps: int = setting(4, "Time steps T per image.")
    beta: float = setting(0.9, "Membrane decay per step (clamped to [0, 1], as snnTorch does).")
    threshold: float = setting(1.0, "Firing threshold.")
    reset_mechanism: str = setting(
        "subtract", "After a spike: subtract the threshold or zero the membrane.")
    surrogate: str = setting("atan", "Surrogate gradient of the spike for BPTT.")
    surrogate_slope: float | None = setting(
        None, "Surrogate steepness (atan alpha / fast_sigmoid slope); null = snnTorch's default.")
    readout: str = setting(
        "membrane", "membrane = mean output membrane over T; spike_count = output spikes.")

    def __post_init__(self) -> None:
        # frozen dataclass: normalise through object.__setattr__ (YAML gives lists)
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "channels", tuple(int(v) for v in self.channels))
        _one_of("SNNSettings", "reset_mechanism", self.reset_mechanism, RESET_MECHANISMS)
        _one_of("SNNSettings", "surrogate", self.surrogate, SURROGATES)
        _one_of("SNNSettings", "readout", self.readout, READOUTS)
        if len(self.input_shape) != 3:
            raise ValueError(f"SNNSettings.input_shape must be (C, H, W); got {self.input_shape}")
        if not self.channels:
            raise ValueError("SNNSettings.channels needs at least one conv layer")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            # padding k//2 keeps H, W only for odd kernels
            raise ValueError(f"SNNSettings.kernel_size must be odd; got {self.kernel_size}")
        if self.num_steps < 1:
            raise ValueError(f"SNNSettings.num_steps must be >= 1; got {self.num_steps}")
        _, height, width = self.feature_shape
        if height < 1 or width < 1:
            raise ValueError(f"SNNSettings: input {self.input_shape} is too small for "
                             f"{len(self.channels)} pooling layers")

    @property
    def slope(self) -> float:
        """Surrogate steepness: atan's alpha or fast_sigmoid's slope."""
        if self.surrogate_slope is None:
            return DEFAULT_SURROGATE_SLOPE[self.surrogate]
        return float(self.surrogate_slope)

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """(C, H, W) after the last conv/pool block (each MaxPool2d(2) floors H and W by 2)."""
        _, height, width = self.input_shape
        scale = 2 ** len(self.channels)
        return (self.channels[-1], height // scale, width // scale)

    @property
    def num_features(self) -> int:
        return math.prod(self.feature_shape)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Keys of the spike records, input side first."""
        return tuple(f"lif{i}" for i in range(1, len(self.channels) + 1)) + ("lif_out",)

    @property
    def output_reset(self) -> str:
        # The membrane readout integrates without reset; spike counting uses normal spiking.
        return "none" if self.readout == "membrane" else self.reset_mechanism


@dataclass(frozen=True)
class ESSettings:
    """One ES run: OpenAI-ES with antithetic pairs, centred ranks and Adam or SGD."""

    generations: int = setting(300, "ES generations (updates) per run.")
    population: int = setting(64, "Members per generation; even (antithetic pairs).")
    batch_size: int = setting(128, "Training images per generation, shared by all members.")
    augment: str = setting(
        "none", "Training-image augmentation of every ES minibatch (full generations and "
                "readout-only steps): none; flip (each image mirrored left-right with "
                "probability 1/2, drawn per minibatch from its own seed); flip_translate (flip, "
                "then each image shifted by up to 2 pixels each way, reflection-padded).",
        added=True)
    sigma: float = setting(0.02, "Perturbation scale at generation 0.")
    sigma_final: float | None = setting(
        None, "Sigma at the last generation (linear decay); null = constant.")
    lr: float = setting(0.005, "Step size on the ES gradient at generation 0.")
    lr_schedule: str = setting("cosine", "Learning-rate schedule: constant, cosine or linear.")
    lr_final_ratio: float = setting(0.1, "Final lr as a fraction of lr (cosine / linear).")
    optimizer: str = setting("adam", "Update rule: adam or sgd (with momentum).")
    momentum: float = setting(0.9, "SGD momentum.")
    adam_beta1: float = setting(0.9, "Adam's first-moment decay.")
    adam_beta2: float = setting(0.999, "Adam's second-moment decay.")
    adam_eps: float = setting(1e-8, "Adam's denominator epsilon.")
    weight_decay: float = setting(0.0, "Decoupled weight decay: theta -= lr * wd * theta.")
    rank: int = setting(
        1, "ES noise: 0 = full-rank Gaussian; r > 0 = rank-r perturbations of every weight "
           "matrix (EGGROLL-style; biases keep full noise).")
    sigma_lr: float = setting(
        0.0, "Learning rate of a per-parameter log-sigma adapted from the fitness (SNES-style "
             "diagonal sigma; needs rank 0); 0 keeps sigma fixed.")
    noise_scale: str = setting(
        "absolute", "absolute = sigma and steps act on the weights as they are; layer = on "
                    "each tensor divided by its initial standard deviation.")
    fitness: str = setting(
        "cross_entropy", "What ES maximises on the minibatch: cross_entropy (minus the mean "
                         "CE), accuracy, or margin (true minus best other logit, clipped).")
    init_readout_scale: float = setting(
        1.0, "Multiplies the initial readout (fc) weights and bias.")
    init_conv_scale: float = setting(
        2.0, "Multiplies the initial conv weights and biases (more hidden spikes at the start).")
    spike_noise: str = setting(
        "shared", "shared = the same poisson spikes for every member; per_member = each "
                  "member draws its own.")
    readout_steps: int = setting(
        4, "Readout-only ES steps after every generation: members perturb only the readout "
           "and reuse the centre's hidden spikes (membrane readout); 0 = none.")
    perturb_readout: bool = setting(
        False, "Whether the full generations perturb (and step) the readout too; false leaves "
              "it to the readout-only steps, so their noise is all in the hidden layers.")
    train_hidden: bool = setting(
        True, "Whether ES trains the spiking (conv) layers; false is the frozen-network "
              "control: no full generation runs, and the readout-only steps alone train the "
              "readout of the initial network, at the same seeds and minibatches.", added=True)
    readout_population: int = setting(256, "Members per readout-only step; even.")
    readout_batch_size: int = setting(256, "Training images per readout-only step (a fresh "
                                           "minibatch each step).")
    readout_sigma: float = setting(0.02, "Perturbation scale of the readout-only steps.")
    readout_lr: float = setting(0.005, "Step size of the readout-only steps at generation 0 "
                                       "(the run's lr schedule).")
    eval_every: int = setting(25, "Test accuracy of the centre every k generations.")

    def __post_init__(self) -> None:
        if self.population < 2 or self.population % 2:
            raise ValueError(f"population must be an even number >= 2, got {self.population}")
        if self.generations < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("generations, batch_size and eval_every must be >= 1")
        if self.sigma <= 0 or self.lr <= 0:
            raise ValueError("sigma and lr must be positive")
        if self.init_readout_scale <= 0 or self.init_conv_scale <= 0:
            raise ValueError("init_readout_scale and init_conv_scale must be positive")
        _one_of("ESSettings", "lr_schedule", self.lr_schedule, SCHEDULES)
        _one_of("ESSettings", "augment", self.augment, AUGMENTS)
        _one_of("ESSettings", "optimizer", self.optimizer, OPTIMIZERS)
        _one_of("ESSettings", "noise_scale", self.noise_scale, NOISE_SCALES)
        _one_of("ESSettings", "fitness", self.fitness, FITNESSES)
        _one_of("ESSettings", "spike_noise", self.spike_noise, SPIKE_NOISE)
        if self.rank < 0:
            raise ValueError(f"rank must be >= 0 (0 = full-rank noise), got {self.rank}")
        if self.sigma_lr < 0:
            raise ValueError(f"sigma_lr must be >= 0 (0 = fixed sigma), got {self.sigma_lr}")
        if self.readout_steps < 0:
            raise ValueError(f"readout_steps must be >= 0 (0 = none), got {self.readout_steps}")
        if self.readout_population < 2 or self.readout_population % 2:
            raise ValueError(f"readout_population must be an even number >= 2, got "
                             f"{self.readout_population}")
        if self.readout_batch_size < 1 or self.readout_sigma <= 0 or self.readout_lr <= 0:
            raise ValueError("readout_batch_size, readout_sigma and readout_lr must be positive")
        if not self.perturb_readout and not self.readout_steps:
            raise ValueError("perturb_readout: false needs readout_steps > 0 (else nothing "
                             "trains the readout)")
        if not self.train_hidden and (self.perturb_readout or not self.readout_steps):
            raise ValueError("train_hidden: false (the frozen-network control) needs "
                             "readout_steps > 0 and perturb_readout: false: the readout-only "
                             "steps are then all that trains")
        if self.sigma_lr and self.rank:
            raise ValueError(f"sigma_lr > 0 (a per-parameter sigma) needs full-rank noise: set "
                             f"rank: 0 (got rank {self.rank})")

    @property
    def evaluations(self) -> int:
        """The run's budget in full member-image evaluations (readout-only ones apart; none
        for the frozen-network control)."""
        return self.generations * self.population * self.batch_size if self.train_hidden else 0

    @property
    def readout_evaluations(self) -> int:
        """Readout-only member-image evaluations (each a [F] x [F, K] product on the
        centre's hidden spikes, about 1/50 of a full CIFAR-10 evaluation)."""
        return (self.generations * self.readout_steps * self.readout_population
                * self.readout_batch_size)


@dataclass(frozen=True)
class ExecutionSettings:
    """How fast a run goes, never what it computes: changing these reruns nothing."""

    chunk_size: int = setting(16, "Members per batched forward pass of the chunked evaluator.")
    image_chunk: int = setting(
        32, "Minibatch images per forward pass of the chunked evaluator (cache-sized pieces).")
    fused: bool = setting(
        True, "Compiled pool + LIF kernels (torch.compile, eager fallback) and channels-last "
              "convs.")
    checkpoint_every: int = setting(5, "Atomic checkpoint every K generations (resume after a "
                                       "kill).")

    def __post_init__(self) -> None:
        if min(self.chunk_size, self.image_chunk, self.checkpoint_every) < 1:
            raise ValueError("chunk_size, image_chunk and checkpoint_every must be >= 1")


@dataclass(frozen=True)
class ReadoutFitSettings:
    """The readout-fit reference: a linear readout fitted by gradient descent (not ES) on
    the standardised readout features of an ES run's frozen initial network."""

    epochs: int = setting(30, "Most passes over the fitting images.")
    batch_size: int = setting(256, "Images per Adam step.")
    lr: float = setting(1e-3, "Adam step size.")
    weight_decay: float = setting(1e-4, "L2 penalty on the readout weights.")
    validation_fraction: float = setting(
        0.1, "Training images held out to pick the epoch (the test images never are).")

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("readout_fit: epochs and batch_size must be >= 1, lr > 0 and "
                             "weight_decay >= 0")
        if not 0 < self.validation_fraction < 1:
            raise ValueError("readout_fit: validation_fraction must be in (0, 1)")


def canonical(settings) -> dict[str, Any]:
    """A settings object as plain, sorted JSON values (tuples as lists): what a job receives
    and what its checkpoint fingerprint hashes."""
    values, out = asdict(settings), {}
    for name, f in sorted(config_fields(type(settings)).items()):
        value = values[name]
        if f.metadata.get("added") and value == f.default:
            continue  # see `setting`: the spec of every run from before the setting existed
        if isinstance(value, tuple):
            value = list(value)
        elif "float" in str(f.type) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # `lr: 1` and `lr: 1.0` are the same setting
        out[name] = value
    return out
