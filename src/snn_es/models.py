"""Spiking CNN (snnTorch reference + pure functional twin) and a conventional baseline CNN.

Architecture (``SNN`` and ``snn_functional_forward`` compute the same function)::

    for each entry c of cfg.channels (layer i = 1, 2, ...):
        Conv2d(c_prev -> c, k, padding=k//2) -> MaxPool2d(2) -> Leaky      ("lif{i}")
    flatten -> Linear(num_classes) -> Leaky                               ("lif_out")

The neuron, its reset and the readout are ``snn_es.lif`` (the one LIF core); ``SNN`` builds
the same network from ``snntorch.Leaky`` modules and is the oracle the tests compare with.
With the membrane readout, ``records["lif_out"]`` holds the threshold crossings of the
non-resetting integrator; they are reported for uniformity but do not affect the logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import snntorch as snn
import torch
import torch.nn.functional as F
from snntorch import surrogate as snn_surrogate
from torch import nn

from snn_es.lif import lif_constants, lif_scan, output_layer, pool_lif, readout, spike_fn
from snn_es.settings import SNNSettings

Tensor = torch.Tensor

# --------------------------------------------------------------------------------------
# snnTorch reference model
# --------------------------------------------------------------------------------------


def _snntorch_surrogate(cfg: SNNSettings) -> Callable[[Tensor], Tensor]:
    if cfg.surrogate == "atan":
        return snn_surrogate.atan(alpha=cfg.slope)
    return snn_surrogate.fast_sigmoid(slope=cfg.slope)


def _leaky(cfg: SNNSettings, reset_mechanism: str) -> snn.Leaky:
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
    spikes [T, B, ...] of each Leaky layer (see ``SNNSettings.layer_names``). Parameter names
    are ``conv{i}.weight``, ``conv{i}.bias``, ``fc.weight``, ``fc.bias``.
    """

    def __init__(self, cfg: SNNSettings) -> None:
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
        return readout(records["lif_out"], torch.stack(out_mems), self.cfg), records

    def _clear_state(self) -> None:
        # Leaky keeps the last membrane (with its autograd graph) in a buffer; drop it so the
        # graph is freed and copy.deepcopy(model) keeps working after a forward pass.
        for name in self.cfg.layer_names:
            lif = getattr(self, name)
            lif.mem = lif.mem.new_zeros(0).detach()


# --------------------------------------------------------------------------------------
# Functional twin (pure tensors; vmap-able over parameter dicts)
# --------------------------------------------------------------------------------------


def _conv_pool(x: Tensor, weight: Tensor, bias: Tensor, padding: int) -> Tensor:
    return F.max_pool2d(F.conv2d(x, weight, bias, padding=padding), 2)


def conv_input(h: Tensor, fused: bool) -> Tensor:
    """Channels-last on the fused path: oneDNN's fast layout for these narrow convs on CPU."""
    return h.contiguous(memory_format=torch.channels_last) if fused else h


def hidden_layer(h: Tensor, weight: Tensor, bias: Tensor, cfg: SNNSettings, static: bool,
                 fused: bool, spike: Callable[[Tensor], Tensor]) -> Tensor:
    """Conv -> MaxPool(2) -> LIF over all T steps: spikes [T, B, C, H', W'].

    ``h`` is [T, B, C, H, W], or with ``static`` the image [B, C, H, W] that every step sees
    (the ``repeat`` encoder): its conv then runs once, not T times. The input of a layer does
    not depend on the layer's state, so all T steps go through the conv as one batch of T*B
    images (same math as step by step, far fewer kernel calls). ``fused`` (forward only):
    channels-last conv and the compiled pool + LIF kernel (``lif.pool_lif``).
    """
    padding = cfg.kernel_size // 2
    conv_in = h if static else h.flatten(0, 1)
    if fused:
        out = F.conv2d(conv_input(conv_in, True), weight, bias, padding=padding)
        return pool_lif(out, cfg, static, True)
    cur = _conv_pool(conv_in, weight, bias, padding)
    if static:
        currents = cur.unsqueeze(0).expand(cfg.num_steps, *cur.shape)
    else:
        currents = cur.unflatten(0, (h.shape[0], h.shape[1]))
    beta, threshold = lif_constants(cfg)
    spikes, _ = lif_scan(currents, beta, threshold, cfg.reset_mechanism, spike)
    return spikes


def snn_functional_forward(
    params: Mapping[str, Tensor],
    x: Tensor,
    cfg: SNNSettings,
    static_input: bool = False,
    fused: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The ``SNN`` forward pass as a pure function of a parameter dict.

    ``params`` uses ``SNN.named_parameters()`` keys, so ``dict(model.named_parameters())``
    works. ``x`` is the encoded sequence [T, B, C, H, W], or with ``static_input=True`` the
    image [B, C, H, W] of the ``repeat`` encoder, whose first conv+pool is then computed
    once and reused for all ``cfg.num_steps`` steps. Returns ``(logits, records)`` like
    ``SNN.forward``.

    The layers are evaluated one after another over all steps rather than step by step; the
    result is the same recurrence. Under autograd the spikes carry the configured surrogate
    gradient (BPTT-trainable); under ``torch.no_grad()`` only the hard Heaviside is
    computed. ``fused=True`` (forward only, e.g. ES evaluation) runs each hidden layer's
    pool + LIF as one compiled kernel; same spikes, several times faster on CPU.
    """
    if fused and torch.is_grad_enabled():
        raise ValueError("fused=True is forward-only: call it under torch.no_grad()")
    spike = spike_fn(cfg)
    records: dict[str, Tensor] = {}
    h = x
    for i in range(1, len(cfg.channels) + 1):
        h = hidden_layer(h, params[f"conv{i}.weight"], params[f"conv{i}.bias"], cfg,
                         static=i == 1 and static_input, fused=fused, spike=spike)
        records[f"lif{i}"] = h
    currents = F.linear(h.flatten(2), params["fc.weight"], params["fc.bias"])
    logits, records["lif_out"] = output_layer(currents, cfg, spike)
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


def make_snn(cfg: SNNSettings, seed: int) -> SNN:
    """An ``SNN`` whose initial weights depend only on ``seed`` (global RNG left untouched)."""
    with seeded_init(seed):
        return SNN(cfg)


def spike_rates(records: Mapping[str, Tensor]) -> dict[str, float]:
    """Mean spike rate per layer: the fraction of (step, neuron, sample) entries that spiked."""
    return {name: float(spikes.detach().float().mean()) for name, spikes in records.items()}
