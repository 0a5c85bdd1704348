"""One forward pass for a chunk of C population members, without ``vmap``.

Activity is laid out member-major, [C, T, B, channels, H, W], so each member's slice is a
contiguous ordinary batch.

Full-rank members (``MemberParams``) have their own weights: each conv runs per member as a
plain dense convolution. On CPU that is faster than one grouped convolution over the chunk
(measured 22 vs 35 ms per member for the second layer of the CIFAR-10 SNN); max-pooling,
the LIF scan (``snn_es.models.pool_lif``) and the readout matmul are shared code.

Low-rank members (``LowRankParams``, EGGROLL-style) share the centre weights ``W``: member
c's weight is ``W + A_c @ B_c.T`` (scales folded into ``A_c``). Where the input is shared
by the chunk (the first layer, with common spikes or the ``repeat`` image), ``W x`` is
computed once for the whole chunk plus a cheap rank-r correction ``A_c @ (B_c.T x)`` per
member. Later layers see per-member inputs, so nothing is shared there and each member's
dense weight is materialised instead. On this 2-core CPU the layers are
memory-bound (pooling and LIF over the pre-pool maps cost as much as the convs), so sharing
``W x`` saves less than the FLOP count suggests; on a GPU the saving is larger.

Member by member, both compute the same function as ``snn_es.models.snn_functional_forward``
on the materialised weights (checked in the tests to float64 rounding).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from snn_es.lif import _pool_lif, compiled_call, heaviside, lif_constants, output_layer
from snn_es.models import hidden_layer
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

    @property
    def members(self) -> int:
        return self.a["fc.weight"].shape[0]

    def dense(self, name: str) -> Tensor:
        """The members' full weights [C, *shape] of weight tensor ``name``."""
        base = self.base[name]
        delta = self.a[name] @ self.b[name].transpose(1, 2)  # [C, out, in]
        return base + delta.reshape(-1, *base.shape)


def _conv_input(h: Tensor, fused: bool) -> Tensor:
    # channels-last: oneDNN's fast layout for these narrow convs on CPU
    return h.contiguous(memory_format=torch.channels_last) if fused else h


def _full_rank_layer(members: MemberParams, i: int, h: Tensor, cfg: SNNSettings, static: bool,
                     shared: bool, fused: bool) -> Tensor:
    weight, bias = members.params[f"conv{i}.weight"], members.params[f"conv{i}.bias"]
    return torch.stack([hidden_layer(h if shared else h[c], weight[c], bias[c], cfg, static,
                                     fused, heaviside) for c in range(members.members)])


def _low_rank_layer(members: LowRankParams, i: int, h: Tensor, cfg: SNNSettings, static: bool,
                    shared: bool, fused: bool) -> Tensor:
    name = f"conv{i}.weight"
    weight, a, b = members.base[name], members.a[name], members.b[name]
    padding, count, rank = cfg.kernel_size // 2, members.members, a.shape[-1]
    # B_c.T as r filters of shape [in_channels, k, k] per member
    filters = b.transpose(1, 2).reshape(count, rank, *weight.shape[1:])
    if not shared:
        # Per-member inputs share nothing: a dense conv with each member's own weights is
        # the fastest (materialising W + A_c @ B_c.T costs out x in numbers per member).
        dense = MemberParams({f"conv{i}.weight": members.dense(name),
                              f"conv{i}.bias": members.bias[f"conv{i}.bias"]})
        return _full_rank_layer(dense, i, h, cfg, static, shared, fused)
    conv_in = _conv_input(h if static else h.flatten(0, 1), fused)
    base = F.conv2d(conv_in, weight, padding=padding)  # once for the whole chunk
    corr = F.conv2d(conv_in, filters.flatten(0, 1), padding=padding)  # [S, C*r, H, W]
    bias = members.bias[f"conv{i}.bias"]
    beta, threshold = lif_constants(cfg)
    spikes = []
    for c in range(count):
        args = (base, corr[:, c * rank:(c + 1) * rank], a[c], bias[c], cfg.num_steps, beta,
                threshold, cfg.reset_mechanism, static)
        spikes.append(compiled_call(_low_rank_pool_lif, *args) if fused
                      else _low_rank_pool_lif(*args))
    return torch.stack(spikes)


def _low_rank_pool_lif(base: Tensor, corr: Tensor, a: Tensor, bias: Tensor, steps: int,
                       beta: float, threshold: float, reset_mechanism: str,
                       static: bool) -> Tensor:
    """Spikes of one member from the shared ``base = W x`` [S, out, H, W], its correction
    ``corr = B_c.T x`` [S, r, H, W], ``a = A_c`` [out, r] and its bias [out]."""
    cur = base + bias[:, None, None]
    for j in range(corr.shape[1]):  # r is small: unrolled, it fuses into one loop
        cur = cur + corr[:, j, None] * a[:, j, None, None]
    return _pool_lif(cur, steps, beta, threshold, reset_mechanism, static)


def population_forward(
    members: MemberParams | LowRankParams,
    x: Tensor,
    cfg: SNNSettings,
    static_input: bool = False,
    per_member_input: bool = False,
    fused: bool = False,
) -> Tensor:
    """Logits [C, B, num_classes] of a chunk of C members, forward only (no autograd).

    ``x`` is the input shared by all members ([T, B, C_in, H, W], or [B, C_in, H, W] with
    ``static_input``), or with ``per_member_input`` one input per member (leading dim C).
    ``fused`` uses channels-last convs and compiled pool + LIF kernels.
    """
    layer = _low_rank_layer if isinstance(members, LowRankParams) else _full_rank_layer
    h = x
    for i in range(1, len(cfg.channels) + 1):
        first = i == 1
        h = layer(members, i, h, cfg, static=first and static_input,
                  shared=first and not per_member_input, fused=fused)

    count, steps, batch = h.shape[:3]
    features = h.reshape(count, steps * batch, -1)  # member c's (channel, y, x) features
    if isinstance(members, LowRankParams):
        weight, bias = members.dense("fc.weight"), members.bias["fc.bias"]
    else:
        weight, bias = members.params["fc.weight"], members.params["fc.bias"]
    currents = torch.baddbmm(bias[:, None], features, weight.transpose(1, 2))
    currents = currents.unflatten(1, (steps, batch)).transpose(0, 1)  # [T, C, B, K]
    return output_layer(currents, cfg)[0]


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
