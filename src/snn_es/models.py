"""Spiking CNN (snnTorch reference + pure functional twin) and a conventional baseline CNN.

Architecture (``SNN`` and ``snn_functional_forward`` compute the same function)::

    for each entry c of cfg.channels (layer i = 1, 2, ...):
        Conv2d(c_prev -> c, k, padding=k//2) -> MaxPool2d(2) -> Leaky      ("lif{i}")
    flatten -> Linear(num_classes) -> Leaky                               ("lif_out")

Leaky neuron, exactly as ``snntorch.Leaky`` (v1.0, default ``reset_delay=True``), per step::

    reset = H(mem[t-1] - thr)              # from the *previous* membrane, no gradient
    subtract: mem[t] = (beta * mem[t-1] + I[t]) - reset * thr
    zero:     mem[t] = beta * ((1 - reset) * mem[t-1]) + I[t]
    none:     mem[t] = beta * mem[t-1] + I[t]
    spk[t]   = H(mem[t] - thr)             # H(x) = 1 if x > 0 (strict), else 0

with ``mem[-1] = 0`` and ``beta`` clamped to [0, 1]. A spike at step t is therefore only
subtracted / zeroed at step t + 1.

Readouts: ``"membrane"`` -> logits = mean over T of the membrane of an output Leaky without
reset (a leaky integrator of the fc current); ``"spike_count"`` -> logits = number of output
spikes over T (output Leaky with the configured reset). With the membrane readout,
``records["lif_out"]`` holds the threshold crossings of the non-resetting integrator; they
are reported for uniformity but do not affect the logits.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import snntorch as snn
import torch
import torch.nn.functional as F
from snntorch import surrogate as snn_surrogate
from torch import nn

Tensor = torch.Tensor

RESET_MECHANISMS = ("subtract", "zero")
SURROGATES = ("atan", "fast_sigmoid")
READOUTS = ("membrane", "spike_count")
# snnTorch's own defaults: atan(alpha=2.0), fast_sigmoid(slope=25).
DEFAULT_SURROGATE_SLOPE = {"atan": 2.0, "fast_sigmoid": 25.0}


def _one_of(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"SNNConfig.{name} must be one of {', '.join(valid)}; got {value!r}")


@dataclass(frozen=True)
class SNNConfig:
    """Settings of the spiking CNN. Lists (e.g. from YAML) are accepted and stored as tuples."""

    input_shape: tuple[int, int, int] = (3, 32, 32)  # (C, H, W)
    num_classes: int = 10
    channels: tuple[int, ...] = (32, 64)
    kernel_size: int = 3
    num_steps: int = 8  # T, used by the encoders and by the static-input path
    beta: float = 0.9
    threshold: float = 1.0
    reset_mechanism: str = "subtract"  # hidden layers (and the output for spike_count)
    surrogate: str = "atan"
    surrogate_slope: float | None = None  # None: snnTorch's default for that surrogate
    readout: str = "membrane"

    def __post_init__(self) -> None:
        # frozen dataclass: normalise through object.__setattr__
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "channels", tuple(int(v) for v in self.channels))
        _one_of("reset_mechanism", self.reset_mechanism, RESET_MECHANISMS)
        _one_of("surrogate", self.surrogate, SURROGATES)
        _one_of("readout", self.readout, READOUTS)
        if len(self.input_shape) != 3:
            raise ValueError(f"SNNConfig.input_shape must be (C, H, W); got {self.input_shape}")
        if not self.channels:
            raise ValueError("SNNConfig.channels needs at least one conv layer")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            # padding k//2 keeps H, W only for odd kernels
            raise ValueError(f"SNNConfig.kernel_size must be odd; got {self.kernel_size}")
        if self.num_steps < 1:
            raise ValueError(f"SNNConfig.num_steps must be >= 1; got {self.num_steps}")
        _, height, width = self.feature_shape
        if height < 1 or width < 1:
            raise ValueError(
                f"SNNConfig: input {self.input_shape} is too small for "
                f"{len(self.channels)} pooling layers"
            )

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


# --------------------------------------------------------------------------------------
# snnTorch reference model
# --------------------------------------------------------------------------------------


def _snntorch_surrogate(cfg: SNNConfig) -> Callable[[Tensor], Tensor]:
    if cfg.surrogate == "atan":
        return snn_surrogate.atan(alpha=cfg.slope)
    return snn_surrogate.fast_sigmoid(slope=cfg.slope)


def _leaky(cfg: SNNConfig, reset_mechanism: str) -> snn.Leaky:
    lif = snn.Leaky(
        beta=cfg.beta,
        threshold=cfg.threshold,
        spike_grad=_snntorch_surrogate(cfg),
        reset_mechanism=reset_mechanism,
    )
    # snnTorch appends every neuron to a class-level list that only its init_hidden=True
    # helpers use. We never use init_hidden; unlisting stops the list from keeping every
    # model ever built (and its last membrane) alive.
    with contextlib.suppress(ValueError):
        snn.SpikingNeuron.instances.remove(lif)
    return lif


class SNN(nn.Module):
    """Spiking CNN built from ``snntorch.Leaky`` neurons: the reference implementation.

    ``forward(x_seq)`` takes [T, B, C, H, W] (spikes, or floats for the ``repeat`` encoder)
    and returns ``(logits [B, num_classes], records)``, where ``records[name]`` holds the
    spikes [T, B, ...] of each Leaky layer (see ``SNNConfig.layer_names``). Parameter names
    are ``conv{i}.weight``, ``conv{i}.bias``, ``fc.weight``, ``fc.bias``.
    """

    def __init__(self, cfg: SNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        in_channels = cfg.input_shape[0]
        for i, out_channels in enumerate(cfg.channels, start=1):
            conv = nn.Conv2d(
                in_channels, out_channels, cfg.kernel_size, padding=cfg.kernel_size // 2
            )
            self.add_module(f"conv{i}", conv)
            self.add_module(f"lif{i}", _leaky(cfg, cfg.reset_mechanism))
            in_channels = out_channels
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(cfg.num_features, cfg.num_classes)
        self.lif_out = _leaky(cfg, cfg.output_reset)

    def _hidden_layers(self) -> Iterator[tuple[str, nn.Conv2d, snn.Leaky]]:
        for i in range(1, len(self.cfg.channels) + 1):
            yield f"lif{i}", getattr(self, f"conv{i}"), getattr(self, f"lif{i}")

    def forward(self, x_seq: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        names = self.cfg.layer_names
        spikes: dict[str, list[Tensor]] = {name: [] for name in names}
        mems: dict[str, Tensor] = {}
        out_mems: list[Tensor] = []
        for t in range(x_seq.shape[0]):
            h = x_seq[t]
            for name, conv, lif in self._hidden_layers():
                cur = self.pool(conv(h))
                # Pass the state explicitly (zeros at t = 0, like snnTorch's own init) so
                # nothing leaks from a previous forward call through the module's buffer.
                spk, mems[name] = lif(cur, mems[name] if t else torch.zeros_like(cur))
                # snnTorch's Heaviside always returns float32; keep the compute dtype so the
                # model also runs after .double().
                h = spk.to(cur.dtype)
                spikes[name].append(h)
            cur = self.fc(h.flatten(1))
            spk, mems["lif_out"] = self.lif_out(
                cur, mems["lif_out"] if t else torch.zeros_like(cur)
            )
            spikes["lif_out"].append(spk.to(cur.dtype))
            out_mems.append(mems["lif_out"])
        self._clear_state()
        records = {name: torch.stack(spikes[name]) for name in names}
        if self.cfg.readout == "membrane":
            logits = torch.stack(out_mems).mean(0)
        else:
            logits = records["lif_out"].sum(0)
        return logits, records

    def _clear_state(self) -> None:
        # Leaky keeps the last membrane (with its autograd graph) in a buffer; drop it so the
        # graph is freed and copy.deepcopy(model) keeps working after a forward pass.
        for name in self.cfg.layer_names:
            lif = getattr(self, name)
            lif.mem = lif.mem.new_zeros(0).detach()


# --------------------------------------------------------------------------------------
# Functional twin (pure tensors; vmap-able over parameter dicts)
# --------------------------------------------------------------------------------------


def _as_float32(value: float) -> float:
    # snnTorch stores beta and threshold as float32 buffers (torch.as_tensor of a Python
    # float). Using the same rounded values keeps float64 runs equal to module.double().
    return float(torch.tensor(value, dtype=torch.float32))


def _heaviside(x: Tensor) -> Tensor:
    return (x > 0).to(x.dtype)


def _surrogate_primitive(cfg: SNNConfig) -> Callable[[Tensor], Tensor]:
    """A smooth function whose derivative is snnTorch's surrogate gradient."""
    slope = cfg.slope
    if cfg.surrogate == "atan":
        # d/dx [atan(pi/2 * a * x) / pi] = (a/2) / (1 + (pi/2 * a * x)^2), snnTorch's ATan.
        return lambda x: torch.atan((math.pi / 2 * slope) * x) / math.pi
    # d/dx [x / (1 + k|x|)] = 1 / (1 + k|x|)^2, snnTorch's FastSigmoid.
    return lambda x: x / (1 + slope * x.abs())


def _spike_fn(cfg: SNNConfig) -> Callable[[Tensor], Tensor]:
    primitive = _surrogate_primitive(cfg)

    def spike(mem_shift: Tensor) -> Tensor:
        out = _heaviside(mem_shift)
        if torch.is_grad_enabled():
            # Straight-through trick: the forward value stays exactly H (g - g == 0), the
            # gradient is the surrogate's. Skipped under no_grad, e.g. in ES evaluation.
            smooth = primitive(mem_shift)
            out = out + (smooth - smooth.detach())
        return out

    return spike


def _lif_scan(
    currents: Tensor,
    beta: float,
    threshold: float,
    reset_mechanism: str,
    spike: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """Run a Leaky layer over the input currents [T, ...]; returns (spikes, membranes)."""
    mem = torch.zeros_like(currents[0])
    spikes, mems = [], []
    for t in range(currents.shape[0]):
        if reset_mechanism == "none":
            mem = beta * mem + currents[t]
        else:
            reset = _heaviside(mem - threshold)  # previous membrane; a comparison: no grad
            if reset_mechanism == "subtract":
                mem = (beta * mem + currents[t]) - reset * threshold
            else:  # "zero"
                mem = beta * ((1 - reset) * mem) + currents[t]
        spikes.append(spike(mem - threshold))
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


def _pool_lif(conv_out: Tensor, steps: int, beta: float, threshold: float,
              reset_mechanism: str, static: bool) -> Tensor:
    """MaxPool2d(2) then a Leaky layer over T steps, forward only: spikes [T, B, C, H', W'].

    ``conv_out`` is [T*B, C, H, W], or [B, C, H, W] with ``static=True`` (the same current at
    every step). Written as plain tensor code so ``torch.compile`` can fuse it into one loop.
    """
    cur = F.max_pool2d(conv_out, 2)
    if static:
        currents = cur.unsqueeze(0).expand(steps, *cur.shape)
    else:
        currents = cur.unflatten(0, (steps, -1))
    spikes, _ = _lif_scan(currents, beta, threshold, reset_mechanism, _heaviside)
    return spikes


_COMPILED: dict[Callable[..., Tensor], Callable[..., Tensor]] = {}


def compiled_call(fn: Callable[..., Tensor], *args: Any) -> Tensor:
    """``fn(*args)`` through ``torch.compile`` (one fused loop instead of dozens of tensor
    ops), falling back to eager ``fn``, with one warning, where compiling fails (no C++
    compiler, unsupported platform). The first call per input shape pays the compile time
    (cached on disk for later processes). ``SNN_ES_COMPILE=0`` in the environment runs
    ``fn`` eagerly."""
    if os.environ.get("SNN_ES_COMPILE", "1") == "0":
        return fn(*args)  # switched off, e.g. in the unit tests (compiling takes seconds)
    compiled = _COMPILED.get(fn)
    if compiled is None:
        compiled = _COMPILED[fn] = torch.compile(fn)
    if compiled is fn:
        return fn(*args)
    try:
        return compiled(*args)
    except Exception as error:  # noqa: BLE001 - any compiler failure: run eager instead
        first_line = str(error).splitlines()[0] if str(error) else ""
        warnings.warn(f"torch.compile of {fn.__name__} failed ({type(error).__name__}: "
                      f"{first_line}); using the eager implementation", RuntimeWarning,
                      stacklevel=2)
        _COMPILED[fn] = fn
        return fn(*args)


def pool_lif(conv_out: Tensor, steps: int, cfg: "SNNConfig", static: bool,
             fused: bool) -> Tensor:
    """Spikes of a hidden layer from its conv output (no autograd; see ``_pool_lif``)."""
    beta = _as_float32(min(max(cfg.beta, 0.0), 1.0))
    threshold = _as_float32(cfg.threshold)
    args = (conv_out, steps, beta, threshold, cfg.reset_mechanism, static)
    return compiled_call(_pool_lif, *args) if fused else _pool_lif(*args)


def _conv_pool(x: Tensor, weight: Tensor, bias: Tensor, padding: int) -> Tensor:
    return F.max_pool2d(F.conv2d(x, weight, bias, padding=padding), 2)


def _conv_pool_seq(x_seq: Tensor, weight: Tensor, bias: Tensor, padding: int) -> Tensor:
    # The input of a layer does not depend on its own state, so all T steps go through the
    # conv as one batch of T*B images (same math as step by step, far fewer kernel calls).
    steps, batch = x_seq.shape[:2]
    out = _conv_pool(x_seq.flatten(0, 1), weight, bias, padding)
    return out.unflatten(0, (steps, batch))


def snn_functional_forward(
    params: Mapping[str, Tensor],
    x: Tensor,
    cfg: SNNConfig,
    static_input: bool = False,
    fused: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The ``SNN`` forward pass as a pure function of a parameter dict.

    ``params`` uses ``SNN.named_parameters()`` keys, so ``dict(model.named_parameters())``
    works. ``x`` is the encoded sequence [T, B, C, H, W], or with ``static_input=True`` the
    image [B, C, H, W] of the ``repeat`` encoder, whose first conv+pool is then computed
    once and reused for all ``cfg.num_steps`` steps. Returns ``(logits, records)`` like
    ``SNN.forward``.

    No module state, in-place ops or data-dependent Python control flow, so it can be
    mapped with ``torch.func.vmap`` over stacked parameter dicts (and/or inputs). The layers
    are evaluated one after another over all steps rather than step by step; the result is
    the same recurrence. Under autograd the spikes carry the configured surrogate gradient
    (BPTT-trainable); under ``torch.no_grad()`` only the hard Heaviside is computed.
    ``fused=True`` (forward only, e.g. ES evaluation) runs each hidden layer's pool + LIF as
    one compiled kernel (``pool_lif``); same spikes, several times faster on CPU.
    """
    if fused and torch.is_grad_enabled():
        raise ValueError("fused=True is forward-only: call it under torch.no_grad()")
    beta = _as_float32(min(max(cfg.beta, 0.0), 1.0))  # snnTorch clamps beta to [0, 1]
    threshold = _as_float32(cfg.threshold)
    spike = _spike_fn(cfg)
    padding = cfg.kernel_size // 2
    records: dict[str, Tensor] = {}

    h = x
    for i in range(1, len(cfg.channels) + 1):
        weight, bias = params[f"conv{i}.weight"], params[f"conv{i}.bias"]
        static = i == 1 and static_input
        if fused:
            conv_in = (h if static else h.flatten(0, 1)).contiguous(
                memory_format=torch.channels_last)  # oneDNN's fast layout on CPU
            h = pool_lif(F.conv2d(conv_in, weight, bias, padding=padding), cfg.num_steps, cfg,
                         static, fused=True)
        else:
            if static:
                # Identical input at every step -> identical conv output: compute it once.
                cur = _conv_pool(h, weight, bias, padding)
                currents = cur.unsqueeze(0).expand(cfg.num_steps, *cur.shape)
            else:
                currents = _conv_pool_seq(h, weight, bias, padding)
            h, _ = _lif_scan(currents, beta, threshold, cfg.reset_mechanism, spike)
        records[f"lif{i}"] = h

    currents = F.linear(h.flatten(2), params["fc.weight"], params["fc.bias"])
    out_spikes, out_mems = _lif_scan(currents, beta, threshold, cfg.output_reset, spike)
    records["lif_out"] = out_spikes
    logits = out_mems.mean(0) if cfg.readout == "membrane" else out_spikes.sum(0)
    return logits, records


# --------------------------------------------------------------------------------------
# Baseline CNN, helpers
# --------------------------------------------------------------------------------------


class BaselineCNN(nn.Module):
    """conv(c1)-conv(c2)-pool-conv(c3)-pool-fc with ReLUs: the backprop sanity check."""

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        channels: tuple[int, int, int] = (32, 64, 128),
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(c3 * (height // 4) * (width // 4), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Seed the global RNG for weight init inside the block, restoring it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def make_snn(cfg: SNNConfig, seed: int) -> SNN:
    """An ``SNN`` whose initial weights depend only on ``seed`` (global RNG left untouched)."""
    with seeded_init(seed):
        return SNN(cfg)


def spike_rates(records: Mapping[str, Tensor]) -> dict[str, float]:
    """Mean spike rate per layer: the fraction of (step, neuron, sample) entries that spiked."""
    return {name: float(spikes.detach().float().mean()) for name, spikes in records.items()}
