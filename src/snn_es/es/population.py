"""One forward pass for a chunk of C population members, in one of three layouts.

**Depth-first** (``_depth_first``; the CPU's): member by member through every layer with
``models.hidden_layer``, exactly as the sequential evaluator does, stacking only the readout
currents (one output Leaky for the chunk).
Stacking the chunk's activations after every layer, as an earlier version did, cost a
quarter of a CIFAR-10 generation in memory copies. Full-rank members (``MemberParams``) have
their own weights; low-rank members (``LowRankParams``, EGGROLL-style: member c's weight is
``W + A_c @ B_c.T``, scales folded into ``A_c``) are materialised per layer, except where the
first layer's input is shared by the chunk (common spikes, the ``repeat`` image): there
``W x`` is computed once for the chunk plus a rank-r correction ``A_c @ (B_c.T x)`` per
member (fused on CPU: ``es.first_layer``'s kernel pools and steps every member's neurons in
one pass over the shared map).

**Flip-delta** (``_depth_first`` with ``flip``; opt-in, CPU): depth-first, but every low-rank member's
second layer is the centre's conv plus the few input spikes that differ from the centre's
(``es.flip_delta``'s C++ kernel).

**Layer-major** (``_layer_major``; EGGROLL's, chosen on a GPU): every layer's base op runs
once with the shared ``W`` over members x images, and each member adds its rank-r
correction, all members at once (a grouped conv with r filters per member; batched matmuls
for the readout). On this 2-core CPU it is 4-8x slower (grouped convs, activation traffic).

Both compute, member by member, the same function as ``models.snn_functional_forward`` on
the materialised weights (checked in the tests to float64 rounding).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from snn_es.lif import _pool_lif, compiled_call, heaviside, lif_constants, output_layer, pool_lif
from snn_es.models import conv_input, hidden_layer
from snn_es.settings import FITNESSES, SNNSettings


@dataclass(frozen=True)
class MemberParams:
    """Full-rank members: ``params[name]`` is [C, *shape]."""

    params: Mapping[str, Tensor]

    @property
    def members(self) -> int:
        return next(iter(self.params.values())).shape[0]


@dataclass(frozen=True)
class LowRankParams:
    """Low-rank members: centre ``base[name]`` [*shape]; per weight matrix ``a[name]``
    [C, out, r] (already times sign * sigma / sqrt(r)) and ``b[name]`` [C, in, r]; per bias
    the members' full values ``bias[name]`` [C, out]."""

    base: Mapping[str, Tensor]
    a: Mapping[str, Tensor]
    b: Mapping[str, Tensor]
    bias: Mapping[str, Tensor]
    # dense weights built so far: the evaluator calls the forward once per image piece
    _dense: dict[str, Tensor] = field(default_factory=dict, repr=False, compare=False)

    @property
    def members(self) -> int:
        return self.a["fc.weight"].shape[0]

    def dense(self, name: str) -> Tensor:
        """The members' full weights [C, *shape] of weight tensor ``name`` (built once)."""
        if name not in self._dense:
            base = self.base[name]
            delta = self.a[name] @ self.b[name].transpose(1, 2)  # [C, out, in]
            self._dense[name] = base + delta.reshape(-1, *base.shape)
        return self._dense[name]


def _member_weights(members: MemberParams | LowRankParams, name: str) -> Tensor:
    """Every member's full tensor ``name`` [C, *shape] (low-rank weights materialised)."""
    if isinstance(members, MemberParams):
        return members.params[name]
    return members.bias[name] if name in members.bias else members.dense(name)


def _low_rank_pool_lif(base: Tensor, corr: Tensor, a: Tensor, bias: Tensor, steps: int,
                       beta: float, threshold: float, reset_mechanism: str,
                       static: bool) -> Tensor:
    """Spikes of one member from the shared ``base = W x`` [S, out, H, W], its correction
    ``corr = B_c.T x`` [S, r, H, W], ``a = A_c`` [out, r] and its bias [out]."""
    cur = base + bias[:, None, None]
    for j in range(corr.shape[1]):  # r is small: unrolled, it fuses into one loop
        cur = cur + corr[:, j, None] * a[:, j, None, None]
    return _pool_lif(cur, steps, beta, threshold, reset_mechanism, static)


def _shared_first_layer(members: LowRankParams, x: Tensor, cfg: SNNSettings, static: bool,
                        fused: bool) -> list[Tensor]:
    """Each member's first-layer spikes from one ``W x`` for the whole chunk (the input is
    shared) plus its rank-r correction ``A_c (B_c.T x)``."""
    weight, a, b = members.base["conv1.weight"], members.a["conv1.weight"], members.b["conv1.weight"]
    padding, rank = cfg.kernel_size // 2, a.shape[-1]
    filters = b.transpose(1, 2).reshape(-1, *weight.shape[1:])  # B_c.T as r filters each
    conv_in = conv_input(x if static else x.flatten(0, 1), fused)
    base = F.conv2d(conv_in, weight, padding=padding)  # once for the whole chunk
    corr = F.conv2d(conv_in, filters, padding=padding)  # [S, C*r, H, W]
    bias = members.bias["conv1.bias"]
    if fused and x.device.type == "cpu":
        from snn_es.es import first_layer  # builds the C++ kernel at first use

        if first_layer.available():  # the same spikes, every member in one pass
            return first_layer.chunk_spikes(base, corr, a, bias, static, cfg)
    beta, threshold = lif_constants(cfg)
    kernel = (lambda *args: compiled_call(_low_rank_pool_lif, *args)) if fused \
        else _low_rank_pool_lif
    return [kernel(base, corr[:, c * rank:(c + 1) * rank], a[c], bias[c], cfg.num_steps, beta,
                   threshold, cfg.reset_mechanism, static) for c in range(members.members)]


def _flip_delta_second_layer(members: LowRankParams, x: Tensor, cfg: SNNSettings,
                             static_input: bool, fused: bool):
    """``(c, h) -> spikes``: member c's second layer from its first-layer spikes ``h``, as the
    centre's conv plus the inputs where ``h`` differs from the centre's spikes (computed here
    once for the chunk and piece, with ``conv(s_c, W2)`` and every ``conv(s_c, B_c)``)."""
    from snn_es.es import flip_delta  # builds the C++ kernel at first use

    centre = hidden_layer(x, members.base["conv1.weight"], members.base["conv1.bias"], cfg,
                          static_input, fused, heaviside)
    a, b = members.a["conv2.weight"], members.b["conv2.weight"]
    shared = flip_delta.shared_conv(centre, members.base["conv2.weight"], b)
    bias = members.bias["conv2.bias"]
    return lambda c, h: flip_delta.member_layer(shared, h, a[c], b[c], bias[c], c, cfg)


def _depth_first(members: MemberParams | LowRankParams, x: Tensor, cfg: SNNSettings,
                 static_input: bool, per_member_input: bool, fused: bool,
                 flip: bool = False) -> Tensor:
    """Member by member through every layer, as the sequential evaluator does, so no
    activation of the chunk is ever stacked (on CPU that copy cost a quarter of the time);
    only a low-rank first layer with a shared input is computed once for the chunk, and with
    ``flip`` (the ``flip_delta`` layout) the second layer's centre conv too."""
    layers = len(cfg.channels)
    shared_first = isinstance(members, LowRankParams) and not per_member_input
    flip = flip and shared_first and layers >= 2
    weights = {f"conv{i}.{kind}": _member_weights(members, f"conv{i}.{kind}")
               for i in range(3 if flip else 2 if shared_first else 1, layers + 1)
               for kind in ("weight", "bias")}
    first = _shared_first_layer(members, x, cfg, static_input, fused) if shared_first else None
    second = _flip_delta_second_layer(members, x, cfg, static_input, fused) if flip else None
    fc_weight, fc_bias = _member_weights(members, "fc.weight"), _member_weights(members, "fc.bias")
    currents = []
    for c in range(members.members):
        if shared_first:
            h = first[c]
        else:
            h = hidden_layer(x[c] if per_member_input else x, weights["conv1.weight"][c],
                             weights["conv1.bias"][c], cfg, static_input, fused, heaviside)
        for i in range(2, layers + 1):
            h = second(c, h) if i == 2 and flip else hidden_layer(
                h, weights[f"conv{i}.weight"][c], weights[f"conv{i}.bias"][c], cfg, False,
                fused, heaviside)
        currents.append(F.linear(h.flatten(2), fc_weight[c], fc_bias[c]))  # [T, B, K]
    # one output Leaky for the chunk (elementwise: the same numbers as member by member,
    # a tenth of the tiny tensor ops)
    return output_layer(torch.stack(currents, dim=1), cfg)[0]  # [C, B, K]


def _members_pool_lif(cur: Tensor, cfg: SNNSettings, static: bool, fused: bool) -> Tensor:
    """Spikes [C, T, B, ...] of C members from their conv outputs [C, S, ...] (S = B with a
    static input, else T*B), through one pool + LIF call for the whole chunk."""
    count, steps = cur.shape[0], cfg.num_steps
    if static:
        spikes = pool_lif(cur.flatten(0, 1), cfg, True, fused)  # [T, C*B, ...]
    else:
        step_major = cur.unflatten(1, (steps, -1)).transpose(0, 1).flatten(0, 2)
        spikes = pool_lif(step_major, cfg, False, fused)  # [T, C*B, ...]
    return spikes.unflatten(1, (count, -1)).transpose(0, 1)


def _layer_major(members: LowRankParams, x: Tensor, cfg: SNNSettings, static_input: bool,
                 per_member_input: bool, fused: bool) -> Tensor:
    """EGGROLL's layout: every layer's base op runs once with the shared centre weights over
    all members x images as one batch, and each member adds its rank-r correction
    ``A_c (B_c.T x_c)``, for all members at once (a grouped conv with r filters per member;
    a batched matmul for the readout). The big shared ops suit a GPU; on this CPU the
    depth-first layout is faster (measured in the benchmark)."""
    count, padding = members.members, cfg.kernel_size // 2
    h = x
    for i in range(1, len(cfg.channels) + 1):
        name = f"conv{i}.weight"
        weight, a, b = members.base[name], members.a[name], members.b[name]
        rank = a.shape[-1]
        filters = b.transpose(1, 2).reshape(count * rank, *weight.shape[1:])
        static = i == 1 and static_input
        shared = i == 1 and not per_member_input
        if shared:
            conv_in = conv_input(h if static else h.flatten(0, 1), fused)  # [S, in, H, W]
            base = F.conv2d(conv_in, weight, padding=padding).unsqueeze(0)  # [1, S, out, ..]
            corr = F.conv2d(conv_in, filters, padding=padding)  # [S, C*r, H, W]
        else:
            per_member = h.flatten(1, 2)  # [C, S, in, H, W]
            base = F.conv2d(conv_input(per_member.flatten(0, 1), fused), weight,
                            padding=padding).unflatten(0, (count, -1))  # [C, S, out, H, W]
            grouped = per_member.transpose(0, 1).flatten(1, 2)  # [S, C*in, H, W]
            corr = F.conv2d(conv_input(grouped, fused), filters, padding=padding,
                            groups=count)  # [S, C*r, H, W]
        corr = corr.unflatten(1, (count, rank)).transpose(0, 1)  # [C, S, r, H, W]
        bias = members.bias[f"conv{i}.bias"]  # [C, out]
        cur = base + bias[:, None, :, None, None] \
            + torch.einsum("csrhw,cor->csohw", corr, a)
        h = _members_pool_lif(cur, cfg, static, fused)  # [C, T, B, ...]

    steps, batch = h.shape[1:3]
    features = h.reshape(count, steps * batch, -1)  # [C, T*B, F]
    weight, a, b = members.base["fc.weight"], members.a["fc.weight"], members.b["fc.weight"]
    currents = (features @ weight.T + members.bias["fc.bias"][:, None]
                + torch.bmm(torch.bmm(features, b), a.transpose(1, 2)))  # [C, T*B, K]
    currents = currents.unflatten(1, (steps, batch)).transpose(0, 1)  # [T, C, B, K]
    return output_layer(currents, cfg)[0]


LAYOUTS = ("depth_first", "layer_major", "flip_delta")


def default_layout(device: torch.device | str) -> str:
    """The fastest layout measured on each kind of device (see ``_layer_major``)."""
    return "layer_major" if torch.device(device).type == "cuda" else "depth_first"


def population_forward(
    members: MemberParams | LowRankParams,
    x: Tensor,
    cfg: SNNSettings,
    static_input: bool = False,
    per_member_input: bool = False,
    fused: bool = False,
    layout: str | None = None,
) -> Tensor:
    """Logits [C, B, num_classes] of a chunk of C members, forward only (no autograd).

    ``x`` is the input shared by all members ([T, B, C_in, H, W], or [B, C_in, H, W] with
    ``static_input``), or with ``per_member_input`` one input per member (leading dim C).
    ``fused`` uses channels-last convs and compiled pool + LIF kernels. ``layout``
    (``depth_first``, ``layer_major`` or ``flip_delta``; None: the device's default)
    changes the order of the work, not the function: all agree to float rounding (tests, in
    float64). ``layer_major`` and ``flip_delta`` need low-rank members (``flip_delta`` also a
    shared input and two hidden layers); otherwise they run depth-first.
    """
    layout = layout or default_layout(x.device)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "layer_major" and isinstance(members, LowRankParams):
        return _layer_major(members, x, cfg, static_input, per_member_input, fused)
    return _depth_first(members, x, cfg, static_input, per_member_input, fused,
                        flip=layout == "flip_delta")


def population_scores(logits: Tensor, labels: Tensor,
                      fitness: str = "cross_entropy") -> tuple[Tensor, Tensor]:
    """(fitness, accuracy), each [C], from logits [C, B, K]. ``fitness``:

    - ``cross_entropy``: minus the mean cross-entropy;
    - ``accuracy``: the minibatch accuracy (coarse: B + 1 distinct values);
    - ``margin``: the mean of ``z_label - max_other z``, clipped to [-1, 1] per image so
      that neither confident nor hopeless images dominate.
    """
    members, batch, classes = logits.shape
    accuracy = (logits.argmax(-1) == labels).to(logits.dtype).mean(1)
    if fitness == "accuracy":
        return accuracy.clone(), accuracy
    if fitness == "margin":
        true = logits.gather(-1, labels.expand(members, batch)[..., None])[..., 0]
        others = logits.scatter(-1, labels.expand(members, batch)[..., None], float("-inf"))
        return (true - others.amax(-1)).clamp(-1, 1).mean(1), accuracy
    if fitness != "cross_entropy":
        raise ValueError(f"fitness must be one of {FITNESSES}, got {fitness!r}")
    loss = F.cross_entropy(logits.reshape(-1, classes), labels.repeat(members),
                           reduction="none").view(members, batch).mean(1)
    return -loss, accuracy
