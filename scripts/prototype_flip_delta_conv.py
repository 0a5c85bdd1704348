"""Prototype, not used by the pipeline: is a member's second layer (conv2 -> pool -> LIF)
cheaper as the centre's conv2 plus the spikes that flipped, in one fused kernel?

Why: with rank-1 noise every member's conv2 input is its own layer-1 spike map, so conv2
runs once per member (about half of a CIFAR-10 generation on this CPU, at ~87% of the
core's AVX2 peak), while the members' spikes differ from the centre's in only ~2% of the
positions (sigma 0.02). A member's weight is ``W + a b^T``, and conv2 is linear, so

    conv2(s_m, W + a b^T) = conv2(s_c, W) + a (x) conv2(s_c, b)          (shared / cheap)
                            + conv2(s_m - s_c, W) + a (x) conv2(s_m - s_c, b)   (flips only)

for any reference map ``s_c`` (here the centre's spikes). The first line is one dense conv
per image piece for the whole chunk (``b`` is one filter per member), the second touches
only the flipped inputs: each adds +-W[c, ky, kx, :] to 9 outputs. EvoTorch's SNES cannot
use this (its dense weight noise makes every member's conv2 a full conv), so it is the one
speed-up that is ours alone.

The first prototype (a scatter into a zeroed buffer, then torch adds the base and runs the
compiled pool + LIF) was not faster than oneDNN: the 5 MB buffer and the byte scan cost more
than the flips. This one never writes a current to memory: per image and time step it
copies the centre's 16 x 16 x 32 conv output into a cache-resident tile, adds the member's
bias, rank-1 term and flips there, max-pools and steps the LIF in place, and writes only the
8 x 8 x 32 spikes. The flips are found 8 floats at a time (AVX2 compare + movemask).

It measures the flip rate on real data (CIFAR-10 big subset, the grid's trained seed-0 run,
its first generation's members), checks the fused kernel against the dense path
(``models.hidden_layer`` on the materialised member weights, fused as the evaluator runs
it), and times both per member on one image piece, one thread. Run from the repository
root after `all` has built the subset and the run (a C++ compiler is needed):

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
from snn_es.lif import lif_constants
from snn_es.models import conv_input, hidden_layer, make_snn, snn_functional_forward
from snn_es.seeding import generator_from
from snn_es.settings import ESSettings, SNNSettings
from snn_es.subsets import load_subset

SUBSET = "results/subsets/cifar10/big.pt"
TRAINED = "results/es/cifar10/repeat/big/chunked/seed0/params.pt"
IMAGES, REPEATS, MEMBERS, CHUNK = 32, 50, 4, 16  # one image piece, one chunk of members

KERNEL = r"""
#include <torch/extension.h>
#include <immintrin.h>
#include <cstring>
#include <vector>

// Spikes [T*B, H/2, W/2, O] (NHWC) of one member's second layer:
//   cur = base + bias + a (corr_base + flips . b) + flips . W, max-pooled 2x2, then a Leaky
//   layer over T (reset from the previous membrane, as lif.lif_scan).
// member, centre: layer-1 spikes [T*B, H, W, C] (NHWC, 0/1 floats); base: conv2(centre, W)
// [T*B, H, W, O]; corr_base: conv2(centre, b) [T*B, H, W]; weight [C, 3, 3, O]; b [C, 3, 3];
// a, bias [O]. RESET: 0 none, 1 subtract, 2 zero. C and O are compile-time constants (no
// division per flip, fixed-width vector loops); the tiles are padded by one on each side so
// that a flip's 9 outputs need no bounds checks.
template <int C, int O, int RESET>
void layer(torch::Tensor out, torch::Tensor member, torch::Tensor centre, torch::Tensor base,
           torch::Tensor corr_base, torch::Tensor weight, torch::Tensor b, torch::Tensor a,
           torch::Tensor bias, int64_t steps, float beta, float thr) {
  static_assert(C % 8 == 0, "C must be a multiple of 8 (AVX2 compares)");
  const int64_t N = member.size(0), H = member.size(1), W = member.size(2);
  const int64_t B = N / steps, Hp = H / 2, Wp = W / 2, P = W + 2;  // P: padded row
  const float* __restrict pm = member.data_ptr<float>();
  const float* __restrict pc = centre.data_ptr<float>();
  const float* __restrict pbase = base.data_ptr<float>();
  const float* __restrict pcorr = corr_base.data_ptr<float>();
  const float* __restrict pw = weight.data_ptr<float>();
  const float* __restrict pb = b.data_ptr<float>();
  const float* __restrict pa = a.data_ptr<float>();
  const float* __restrict pbias = bias.data_ptr<float>();
  float* __restrict po = out.data_ptr<float>();
  std::vector<float> cur_v((H + 2) * P * O), corr_v((H + 2) * P), mem_v(Hp * Wp * O);
  float* __restrict cur = cur_v.data();
  float* __restrict corr = corr_v.data();
  float* __restrict mem = mem_v.data();
  for (int64_t img = 0; img < B; ++img) {
    std::memset(mem, 0, sizeof(float) * Hp * Wp * O);
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t n = t * B + img;
      for (int64_t y = 0; y < H; ++y) {
        std::memcpy(cur + ((y + 1) * P + 1) * O, pbase + (n * H + y) * W * O,
                    sizeof(float) * W * O);
        std::memcpy(corr + (y + 1) * P + 1, pcorr + (n * H + y) * W, sizeof(float) * W);
      }
      const float* __restrict m = pm + n * H * W * C;
      const float* __restrict c = pc + n * H * W * C;
      for (int64_t y = 0; y < H; ++y) {
        for (int64_t x = 0; x < W; ++x) {
          const int64_t at = (y * W + x) * C;
          for (int v = 0; v < C; v += 8) {
            int mask = _mm256_movemask_ps(_mm256_cmp_ps(
                _mm256_loadu_ps(m + at + v), _mm256_loadu_ps(c + at + v), _CMP_NEQ_OQ));
            while (mask) {
              const int ci = v + __builtin_ctz(mask);
              mask &= mask - 1;
              const float d = m[at + ci] - c[at + ci];
              // input (y, x) feeds output (y + 1 - ky, x + 1 - kx): padded (y + 2 - ky, ...)
              for (int ky = 0; ky < 3; ++ky) {
                for (int kx = 0; kx < 3; ++kx) {
                  const int64_t q = (y + 2 - ky) * P + (x + 2 - kx);
                  const float* __restrict wk = pw + ((ci * 3 + ky) * 3 + kx) * O;
                  float* __restrict dst = cur + q * O;
                  for (int o = 0; o < O; ++o) dst[o] += d * wk[o];
                  corr[q] += d * pb[(ci * 3 + ky) * 3 + kx];
                }
              }
            }
          }
        }
      }
      float* __restrict spikes = po + n * Hp * Wp * O;
      for (int64_t py = 0; py < Hp; ++py) {
        for (int64_t px = 0; px < Wp; ++px) {
          const int64_t q00 = (2 * py + 1) * P + 2 * px + 1, q01 = q00 + 1, q10 = q00 + P,
                        q11 = q10 + 1;
          const float c00 = corr[q00], c01 = corr[q01], c10 = corr[q10], c11 = corr[q11];
          float* __restrict mm = mem + (py * Wp + px) * O;
          float* __restrict sp = spikes + (py * Wp + px) * O;
          for (int o = 0; o < O; ++o) {
            const float v00 = cur[q00 * O + o] + pbias[o] + pa[o] * c00;
            const float v01 = cur[q01 * O + o] + pbias[o] + pa[o] * c01;
            const float v10 = cur[q10 * O + o] + pbias[o] + pa[o] * c10;
            const float v11 = cur[q11 * O + o] + pbias[o] + pa[o] * c11;
            const float in = std::max(std::max(v00, v01), std::max(v10, v11));
            const float prev = mm[o];
            const float fired = prev - thr > 0.f ? 1.f : 0.f;
            float next;
            if constexpr (RESET == 1) next = (beta * prev + in) - fired * thr;
            else if constexpr (RESET == 2) next = beta * ((1.f - fired) * prev) + in;
            else next = beta * prev + in;
            mm[o] = next;
            sp[o] = next - thr > 0.f ? 1.f : 0.f;
          }
        }
      }
    }
  }
}

void flip_delta_layer(torch::Tensor out, torch::Tensor member, torch::Tensor centre,
                      torch::Tensor base, torch::Tensor corr_base, torch::Tensor weight,
                      torch::Tensor b, torch::Tensor a, torch::Tensor bias, int64_t steps,
                      double beta, double thr, int64_t reset) {
  TORCH_CHECK(member.size(3) == 16 && weight.size(3) == 32, "prototype: C = 16, O = 32 only");
  auto run = reset == 1 ? layer<16, 32, 1> : reset == 2 ? layer<16, 32, 2> : layer<16, 32, 0>;
  run(out, member, centre, base, corr_base, weight, b, a, bias, steps, beta, thr);
}
"""


def timed(fn) -> float:
    """Milliseconds per call (median)."""
    return 1e3 * _time(fn, REPEATS, torch.device("cpu"))


def nhwc(maps: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> a contiguous [N, H, W, C] (free when ``maps`` is channels-last)."""
    return maps.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)


@torch.no_grad()
def main() -> None:
    torch.set_num_threads(1)
    subset = load_subset(SUBSET)
    cfg = SNNSettings(input_shape=tuple(subset["train_images"].shape[1:]), num_classes=10)
    es = ESSettings()
    assert es.rank == 1 and cfg.kernel_size == 3 and cfg.channels[1] == 32
    layout = ParamLayout.of(make_snn(cfg, 0))
    theta = torch.load(TRAINED)["theta"]
    strategy = OpenAIES(theta.clone(), es, 0, shapes=layout.shapes,
                        fixed=tuple(name in READOUT_NAMES for name in layout.names))
    order = torch.randperm(len(subset["train_labels"]), generator=generator_from(0, "batch", 0))
    images = to_float(subset["train_images"][order[:IMAGES]])
    centre = layout.unflatten(theta)
    _, records = snn_functional_forward(centre, images, cfg, static_input=True, fused=True)
    s_centre = records["lif1"]  # [T, B, 16, 16, 16]
    maps = s_centre.flatten(0, 1)
    weight = centre["conv2.weight"]  # [32, 16, 3, 3]
    beta, threshold = lif_constants(cfg)
    reset = {"none": 0, "subtract": 1, "zero": 2}[cfg.reset_mechanism]
    kernel = load_inline("flip_delta_layer", cpp_sources=KERNEL, functions=["flip_delta_layer"],
                         extra_cflags=["-O3", "-march=native"])
    weight_k = weight.permute(1, 2, 3, 0).contiguous()  # [in, 3, 3, out]
    base = nhwc(F.conv2d(conv_input(maps, True), weight, padding=1))  # shared by the chunk
    steps, batch = s_centre.shape[:2]
    centre_k = nhwc(maps)
    # once per image piece for a chunk of CHUNK members: the centre's conv2 and every
    # member's rank-1 filter b over the centre's spikes (one conv of CHUNK output channels)
    filters = torch.randn(CHUNK, *weight.shape[1:], generator=torch.Generator().manual_seed(0))
    shared_ms = timed(lambda: (F.conv2d(conv_input(maps, True), weight, padding=1),
                               F.conv2d(conv_input(maps, True), filters, padding=1)))
    out = torch.empty(steps * batch, maps.shape[2] // 2, maps.shape[3] // 2, weight.shape[0])
    for member in range(MEMBERS):
        flat = strategy.member(0, member)
        params = layout.unflatten(flat)
        delta = layout.unflatten(flat - theta)["conv2.weight"]  # sigma a b^T, rank 1
        u, s, vh = torch.linalg.svd(delta.flatten(1), full_matrices=False)
        a, b = u[:, 0] * s[0], vh[0].reshape(weight.shape[1:])  # [32], [16, 3, 3]
        _, member_records = snn_functional_forward(params, images, cfg, static_input=True,
                                                   fused=True)
        s_member = member_records["lif1"]
        reference = hidden_layer(s_member, params["conv2.weight"], params["conv2.bias"], cfg,
                                 False, True, None)  # the evaluator's dense path

        s_member_k = nhwc(s_member.flatten(0, 1))  # the layout the dense conv gets too
        corr = F.conv2d(conv_input(maps, True), b[None], padding=1)[:, 0].contiguous()
        b_k = b.contiguous()

        def fused_layer():
            kernel.flip_delta_layer(out, s_member_k, centre_k, base, corr, weight_k, b_k, a,
                                    params["conv2.bias"], steps, beta, threshold, reset)
            return out

        fused_layer()
        spikes = out.view(steps, batch, *out.shape[1:]).permute(0, 1, 4, 2, 3)
        mismatch = float((spikes != reference).float().mean())
        dense_ms = timed(lambda: hidden_layer(s_member, params["conv2.weight"],
                                              params["conv2.bias"], cfg, False, True, None))
        fused_ms = timed(fused_layer)
        layout_ms = timed(lambda: nhwc(s_member.flatten(0, 1)))
        print(f"member {member}: {float((s_member != s_centre).float().mean()):.2%} of the "
              f"layer-1 spikes flipped; layer 2 on {steps * batch} maps: dense conv + compiled "
              f"pool/LIF {dense_ms:.2f} ms; fused flip delta {fused_ms:.2f} ms + layout "
              f"{layout_ms:.2f} ms + shared {shared_ms / CHUNK:.2f} ms "
              f"({dense_ms / (fused_ms + layout_ms + shared_ms / CHUNK):.1f}x); layer-2 spikes "
              f"differing from the dense path: {mismatch:.1e}")

if __name__ == "__main__":
    main()
