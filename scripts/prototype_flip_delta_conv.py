"""Measures the flip-delta kernel (``snn_es.es.flip_delta``, not used by the pipeline yet)
on real data: is a member's second layer (conv2 -> pool -> LIF) cheaper as the centre's
conv2 plus the layer-1 spikes that flipped, than as the evaluator's dense conv?

It takes the CIFAR-10 big subset, the trained seed-0 run at 2.46M and a chunk of its first
generation's members (rank-1 factors recovered from the noise), checks the kernel's spikes
against the dense path (``models.hidden_layer`` on the materialised member weights, fused as
the evaluator runs it: channels-last oneDNN conv, compiled pool + LIF), and times both per
member on one image piece, one thread, adding the member's share of the chunk's shared convs
(the centre's conv2 and every member's rank-1 filter over the centre's spikes). Run from the
repository root after `all` and `scaling` have built the subset and the run (a C++ compiler is needed):

    ./uv run python scripts/prototype_flip_delta_conv.py

History: a first version scattered the flips into a zeroed buffer, then let torch add the
base and run the compiled pool + LIF. It was not faster than oneDNN, because the 5 MB buffer
and the byte scan cost more than the flips. The kernel now never writes a current to memory.
"""

from __future__ import annotations

import torch

from snn_es.benchmark import _time  # median of repeats after a warm-up
from snn_es.encoders import to_float
from snn_es.es.params import ParamLayout
from snn_es.es.readout import READOUT_NAMES
from snn_es.es import flip_delta
from snn_es.es.strategy import OpenAIES
from snn_es.models import hidden_layer, make_snn, snn_functional_forward
from snn_es.seeding import generator_from
from snn_es.settings import ESSettings, SNNSettings
from snn_es.subsets import load_subset

SUBSET = "results/subsets/cifar10/big.pt"
TRAINED = "results/scaling/cifar10/repeat/p64_b128/e2457600/seed0/params.pt"  # 300 generations
IMAGES, REPEATS, MEMBERS, CHUNK = 32, 50, 4, 16  # one image piece, one chunk of members


def timed(fn) -> float:
    """Milliseconds per call (median)."""
    return 1e3 * _time(fn, REPEATS, torch.device("cpu"))


@torch.no_grad()
def main() -> None:
    torch.set_num_threads(1)
    subset = load_subset(SUBSET)
    cfg = SNNSettings(input_shape=tuple(subset["train_images"].shape[1:]), num_classes=10)
    es = ESSettings()
    layout = ParamLayout.of(make_snn(cfg, 0))
    theta = torch.load(TRAINED)["theta"]
    strategy = OpenAIES(theta.clone(), es, 0, shapes=layout.shapes,
                        fixed=tuple(name in READOUT_NAMES for name in layout.names))
    order = torch.randperm(len(subset["train_labels"]), generator=generator_from(0, "batch", 0))
    images = to_float(subset["train_images"][order[:IMAGES]])
    centre = layout.unflatten(theta)
    _, records = snn_functional_forward(centre, images, cfg, static_input=True, fused=True)
    s_centre = records["lif1"]  # [T, B, 16, 16, 16]
    weight = centre["conv2.weight"]  # [32, 16, 3, 3]
    members = []
    for member in range(CHUNK):  # a chunk of the first generation, factors from the noise
        flat = strategy.member(0, member)
        delta = layout.unflatten(flat - theta)["conv2.weight"].flatten(1)  # a b^T, rank 1
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        members.append((layout.unflatten(flat), (u[:, :es.rank] * s[:es.rank]),
                        vh[:es.rank].T.contiguous()))
    b_chunk = torch.stack([b for _, _, b in members])  # [CHUNK, C*K*K, r]
    shared = flip_delta.shared_conv(s_centre, weight, b_chunk)
    shared_ms = timed(lambda: flip_delta.shared_conv(s_centre, weight, b_chunk))
    for member, (params, a, b) in enumerate(members[:MEMBERS]):
        _, member_records = snn_functional_forward(params, images, cfg, static_input=True,
                                                   fused=True)
        s_member = member_records["lif1"]

        def dense():  # the evaluator's path: channels-last conv, compiled pool + LIF
            return hidden_layer(s_member, params["conv2.weight"], params["conv2.bias"], cfg,
                                False, True, None)

        def fused():
            return flip_delta.member_layer(shared, s_member, a, b, params["conv2.bias"],
                                           member, cfg)

        mismatch = float((fused() != dense()).float().mean())
        dense_ms, fused_ms = timed(dense), timed(fused)
        total_ms = fused_ms + shared_ms / CHUNK
        print(f"member {member}: {float((s_member != s_centre).float().mean()):.2%} of the "
              f"layer-1 spikes flipped; layer 2 on {s_member.shape[0] * s_member.shape[1]} "
              f"maps: dense conv + compiled pool/LIF {dense_ms:.2f} ms, flip delta "
              f"{fused_ms:.2f} ms + 1/{CHUNK} of the chunk's shared convs ({shared_ms:.2f} ms) "
              f"= {total_ms:.2f} ms ({dense_ms / total_ms:.1f}x); layer-2 spikes differing "
              f"from the dense path: {mismatch:.1e}")


if __name__ == "__main__":
    main()
