"""Prototype, not used by the pipeline: is a member's second conv cheaper as the centre's
conv plus a scatter of the spikes that flipped?

Why: with rank-1 noise every member's conv2 input is its own layer-1 spike map, so conv2
runs once per member (about half of a CIFAR-10 generation on this CPU, at ~87% of the
core's AVX2 peak), while the members' spikes differ from the centre's in only ~2% of the
positions (sigma 0.02). Since conv2 is linear,

    conv2(s_member, W) = conv2(s_centre, W) + conv2(s_member - s_centre, W),

and the second term touches only the flipped inputs: each adds +-W[:, c, ky, kx] to 9
output positions. The centre's conv2 is shared by the whole population, so a member's conv2
costs only its flips. EvoTorch's SNES cannot use this (its dense weight noise makes
conv2(s, W + E) a full conv per member), so it is the one speed-up that is ours alone.

This script measures the flip rate on real data (CIFAR-10 big subset, the grid's trained
seed-0 run and its first generation's members) and times a plain C++ scatter kernel
(compiled at first use with torch's cpp_extension; a C++ compiler and ninja are needed)
against oneDNN's dense conv2, one thread. It checks that both give the same currents to
float rounding. Run from the repository root after `all` has built the subset and the run:

    ./uv run python scripts/prototype_flip_delta_conv.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.cpp_extension import load_inline

from snn_es.benchmark import _time  # median of repeats after a warm-up
from snn_es.encoders import to_float
from snn_es.es.params import ParamLayout
from snn_es.es.readout import READOUT_NAMES
from snn_es.es.strategy import OpenAIES
from snn_es.models import make_snn, snn_functional_forward
from snn_es.seeding import generator_from
from snn_es.settings import ESSettings, SNNSettings
from snn_es.subsets import load_subset

SUBSET = "results/subsets/cifar10/big.pt"
TRAINED = "results/es/cifar10/repeat/big/chunked/seed0/params.pt"
IMAGES, REPEATS = 32, 50  # one image piece of the chunked evaluator

KERNEL = r"""
#include <torch/extension.h>
#include <cstring>
// out [N, H+2, W+2, 32] (NHWC, padded by 1) = sum over inputs where the member's spike
// differs from the centre's of (+-1) * W[c, ky, kx, :] at the 9 outputs the input feeds.
void flip_delta_conv(torch::Tensor out, torch::Tensor member, torch::Tensor centre,
                     torch::Tensor weight) {
  const int64_t N = member.size(0), C = member.size(1), H = member.size(2), W = member.size(3);
  constexpr int O = 32;
  float* po = out.data_ptr<float>();
  std::memset(po, 0, sizeof(float) * out.numel());
  const uint8_t* pm = member.data_ptr<uint8_t>();
  const uint8_t* pc = centre.data_ptr<uint8_t>();
  const float* pw = weight.data_ptr<float>();
  for (int64_t n = 0; n < N; ++n) {
    float* on = po + n * (H + 2) * (W + 2) * O;
    for (int64_t c = 0; c < C; ++c) {
      const uint8_t* mc = pm + (n * C + c) * H * W;
      const uint8_t* cc = pc + (n * C + c) * H * W;
      for (int64_t i = 0; i < H * W; ++i) {
        if (mc[i] == cc[i]) continue;
        const float d = mc[i] ? 1.f : -1.f;
        const int64_t y = i / W, x = i % W;
        for (int ky = 0; ky < 3; ++ky) for (int kx = 0; kx < 3; ++kx) {
          float* dst = on + ((y - ky + 2) * (W + 2) + (x - kx + 2)) * O;
          const float* w = pw + ((c * 3 + ky) * 3 + kx) * O;
#pragma GCC unroll 32
          for (int o = 0; o < O; ++o) dst[o] += d * w[o];
        }
      }
    }
  }
}
"""


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
    _, records = snn_functional_forward(centre, images, cfg, static_input=True)
    s_centre = records["lif1"].flatten(0, 1).contiguous()  # [T*B, 16, 16, 16]
    weight = centre["conv2.weight"]  # [32, 16, 3, 3]
    kernel = load_inline("flip_delta_conv", cpp_sources=KERNEL, functions=["flip_delta_conv"],
                         extra_cflags=["-O3", "-march=native"])
    base = F.conv2d(s_centre.contiguous(memory_format=torch.channels_last), weight, padding=1)
    weight_nhwc = weight.permute(1, 2, 3, 0).contiguous()  # [in, 3, 3, out]
    out = torch.empty(s_centre.shape[0], s_centre.shape[2] + 2, s_centre.shape[3] + 2,
                      weight.shape[0])
    for member in range(4):
        params = layout.unflatten(strategy.member(0, member))
        _, member_records = snn_functional_forward(params, images, cfg, static_input=True)
        s_member = member_records["lif1"].flatten(0, 1).contiguous()
        dense_in = s_member.contiguous(memory_format=torch.channels_last)
        reference = F.conv2d(dense_in, weight, padding=1)
        m8, c8 = s_member.to(torch.uint8), s_centre.to(torch.uint8)
        kernel.flip_delta_conv(out, m8, c8, weight_nhwc)
        error = (base + out[:, 1:-1, 1:-1].permute(0, 3, 1, 2) - reference).abs().max()
        dense_ms = timed(lambda: F.conv2d(dense_in, weight, padding=1))
        delta_ms = timed(lambda: kernel.flip_delta_conv(out, m8, c8, weight_nhwc))
        print(f"member {member}: {float((s_member != s_centre).float().mean()):.2%} of the "
              f"layer-1 spikes flipped; dense conv2 {dense_ms:.2f} ms, flip delta "
              f"{delta_ms:.2f} ms ({dense_ms / delta_ms:.1f}x) on {s_centre.shape[0]} maps; "
              f"max |difference| {float(error):.1e}")


if __name__ == "__main__":
    main()
