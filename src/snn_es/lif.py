"""The one LIF core: constants, spike, step/scan with reset, readout, and the fused kernel.

Every forward pass of the project (``models.snn_functional_forward``, the chunked
``es.population.population_forward``) runs its neurons through this module; the snnTorch
``Leaky`` module in ``models.SNN`` is the oracle the tests compare it with. The CPU's C++
kernels (``es.first_layer``, ``es.flip_delta``) step their neurons with the same rule in
C++ (``es.native.SHARED_SOURCE``), tested spike for spike against this module's path.

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
spikes over T (output Leaky with the configured reset).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from snn_es.settings import SNNSettings

Tensor = torch.Tensor


def _as_float32(value: float) -> float:
    # snnTorch stores beta and threshold as float32 buffers (torch.as_tensor of a Python
    # float). Using the same rounded values keeps float64 runs equal to module.double().
    return float(torch.tensor(value, dtype=torch.float32))


def lif_constants(cfg: SNNSettings) -> tuple[float, float]:
    """(beta, threshold) as snnTorch uses them: beta clamped to [0, 1], both float32-rounded."""
    return _as_float32(min(max(cfg.beta, 0.0), 1.0)), _as_float32(cfg.threshold)


def heaviside(x: Tensor) -> Tensor:
    return (x > 0).to(x.dtype)


def _surrogate_primitive(cfg: SNNSettings) -> Callable[[Tensor], Tensor]:
    """A smooth function whose derivative is snnTorch's surrogate gradient."""
    slope = cfg.slope
    if cfg.surrogate == "atan":
        # d/dx [atan(pi/2 * a * x) / pi] = (a/2) / (1 + (pi/2 * a * x)^2), snnTorch's ATan.
        return lambda x: torch.atan((math.pi / 2 * slope) * x) / math.pi
    # d/dx [x / (1 + k|x|)] = 1 / (1 + k|x|)^2, snnTorch's FastSigmoid.
    return lambda x: x / (1 + slope * x.abs())


def spike_fn(cfg: SNNSettings) -> Callable[[Tensor], Tensor]:
    """H(x) forward; under autograd its gradient is the configured surrogate's."""
    primitive = _surrogate_primitive(cfg)

    def spike(mem_shift: Tensor) -> Tensor:
        out = heaviside(mem_shift)
        if torch.is_grad_enabled():
            # Straight-through trick: the forward value stays exactly H (g - g == 0), the
            # gradient is the surrogate's. Skipped under no_grad, e.g. in ES evaluation.
            smooth = primitive(mem_shift)
            out = out + (smooth - smooth.detach())
        return out

    return spike


def lif_scan(currents: Tensor, beta: float, threshold: float, reset_mechanism: str,
             spike: Callable[[Tensor], Tensor] = heaviside) -> tuple[Tensor, Tensor]:
    """Run a Leaky layer over the input currents [T, ...]; returns (spikes, membranes)."""
    mem = torch.zeros_like(currents[0])
    spikes, mems = [], []
    for t in range(currents.shape[0]):
        if reset_mechanism == "none":
            mem = beta * mem + currents[t]
        else:
            reset = heaviside(mem - threshold)  # previous membrane; a comparison: no grad
            if reset_mechanism == "subtract":
                mem = (beta * mem + currents[t]) - reset * threshold
            else:  # "zero"
                mem = beta * ((1 - reset) * mem) + currents[t]
        spikes.append(spike(mem - threshold))
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


def readout(out_spikes: Tensor, out_mems: Tensor, cfg: SNNSettings) -> Tensor:
    """Logits from the output layer's spikes and membranes [T, ..., K]."""
    return out_mems.mean(0) if cfg.readout == "membrane" else out_spikes.sum(0)


def output_layer(currents: Tensor, cfg: SNNSettings,
                 spike: Callable[[Tensor], Tensor] = heaviside) -> tuple[Tensor, Tensor]:
    """The output Leaky over the readout currents [T, ..., K]: (logits, output spikes)."""
    beta, threshold = lif_constants(cfg)
    out_spikes, out_mems = lif_scan(currents, beta, threshold, cfg.output_reset, spike)
    return readout(out_spikes, out_mems, cfg), out_spikes


# --------------------------------------------------------------------------------------
# The fused hidden-layer kernel (forward only): max-pool + LIF scan as one compiled loop
# --------------------------------------------------------------------------------------


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
    spikes, _ = lif_scan(currents, beta, threshold, reset_mechanism, heaviside)
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
        # One kernel per input shape (dynamic=False): a shape-generic kernel, which torch
        # switches to once it has seen two shapes, ran 2-3x slower on CPU (the evaluators,
        # test-set evaluation and chunk remainders call with several shapes).
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        compiled = _COMPILED[fn] = torch.compile(fn, dynamic=False)
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


def pool_lif(conv_out: Tensor, cfg: SNNSettings, static: bool, fused: bool) -> Tensor:
    """Spikes of a hidden layer from its conv output (no autograd; see ``_pool_lif``)."""
    beta, threshold = lif_constants(cfg)
    args = (conv_out, cfg.num_steps, beta, threshold, cfg.reset_mechanism, static)
    return compiled_call(_pool_lif, *args) if fused else _pool_lif(*args)
