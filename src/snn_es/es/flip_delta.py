"""A low-rank member's hidden layer (conv -> MaxPool(2) -> LIF) from the centre's conv plus
the input spikes that flipped: one fused C++ kernel, the second layer of the ``flip_delta``
evaluator (``population._depth_first`` with ``flip``; a mode of its own because it changes
every member's currents at float rounding). ``scripts/prototype_flip_delta_conv.py``
measures the kernel alone on real data.

Why: with rank-r noise a member's weight is ``W + A B^T`` and its layer input is its own
spike map ``s_m``, so every member runs a full conv (about half of a CIFAR-10 generation on
the CPU). But the members' input spikes differ from a shared reference map ``s_c`` (the
centre's) in only ~2% of the positions at sigma 0.02, and the conv is linear:

    conv(s_m, W + A B^T) = conv(s_c, W) + A conv(s_c, B)               shared per image piece
                           + conv(s_m - s_c, W) + A conv(s_m - s_c, B)   the flips only

The first line is one dense conv of the centre for the whole chunk (``B`` is r filters per
member); each flipped input of the second adds +-``W[:, c, ky, kx]`` to K x K outputs. The
kernel never writes a member's current to memory: per image and time step it copies the
shared conv into a cache-sized tile, adds the flips, the bias and the rank-r term, max-pools
and steps the Leaky neurons (``lif.lif_scan``'s rule) in place, writing only the spikes.
This holds for any ``s_c``; the centre's spikes make the flips few. EvoTorch's SNES cannot
use it (dense noise: every member's conv is a full conv), so it is a speed-up of ours alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from snn_es.es import native
from snn_es.lif import lif_constants
from snn_es.settings import SNNSettings


_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

// One member's spikes out [T*B, H/2, W/2, O] (NHWC) from: member, centre [T*B, H, W, C]
// (NHWC, 0/1), base = conv(centre, W) [T*B, H, W, O], corr = conv(centre, B) [T*B, S, H, W]
// (NCHW: a member reads only its own rows; channels offset .. offset + R are this member's),
// weight [C, K, K, O], b [C, K, K, R], a_t [R, O] (A transposed), bias [O]. Row-major loops
// only: no division per flip.
// CC, OO, RR, KK: C, O, R, K as compile-time constants for the shapes the configs use (the
// loops then unroll and vectorize: ~4x faster), 0 for any other shape (runtime values).
// Images first .. last - 1 of the batch; images are independent (each has its own
// neurons), so member_layer splits them over torch's intra-op threads.
template <typename T, int RESET, int CC, int OO, int RR, int KK>
void member_images(const T* __restrict m, const T* __restrict c, const T* __restrict base,
                   const T* __restrict corr_in, const T* __restrict w, const T* __restrict b,
                   const T* __restrict a_t, const T* __restrict bias, T* __restrict out,
                   int64_t steps, int64_t batch, int64_t H, int64_t W, int64_t C_, int64_t O_,
                   int64_t R_, int64_t K_, int64_t S, int64_t offset, T beta, T thr,
                   int64_t first, int64_t last) {
  const int64_t C = CC ? CC : C_, O = OO ? OO : O_, R = RR ? RR : R_, K = KK ? KK : K_;
  const int64_t pad = K / 2, P = W + 2 * pad, Hp = H / 2, Wp = W / 2;
  // tiles padded by `pad` on each side, so a flip's K x K outputs need no bounds checks
  std::vector<T> cur_v((H + 2 * pad) * P * O), corr_v((H + 2 * pad) * P * R), mem_v(Hp * Wp * O);
  T* __restrict cur = cur_v.data();
  T* __restrict corr = corr_v.data();
  T* __restrict mem = mem_v.data();
  for (int64_t img = first; img < last; ++img) {
    std::fill(mem_v.begin(), mem_v.end(), T(0));
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t n = t * batch + img;
      for (int64_t y = 0; y < H; ++y) {
        std::memcpy(cur + ((y + pad) * P + pad) * O, base + (n * H + y) * W * O,
                    sizeof(T) * W * O);
        for (int64_t j = 0; j < R; ++j) {  // corr_in is NCHW: this member's rows are contiguous
          const T* __restrict row = corr_in + ((n * S + offset + j) * H + y) * W;
          for (int64_t x = 0; x < W; ++x) corr[((y + pad) * P + x + pad) * R + j] = row[x];
        }
      }
      const T* __restrict mn = m + n * H * W * C;
      const T* __restrict cn = c + n * H * W * C;
      for (int64_t y = 0; y < H; ++y) {
        for (int64_t x = 0; x < W; ++x) {
          const int64_t at = (y * W + x) * C;
          if (std::memcmp(mn + at, cn + at, sizeof(T) * C) == 0) continue;  // most positions
          for (int64_t ci = 0; ci < C; ++ci) {
            const T d = mn[at + ci] - cn[at + ci];
            if (d == T(0)) continue;
            // input (y, x) feeds output (y + pad - ky, x + pad - kx), padded (y + 2 pad - ky, ..)
            for (int64_t ky = 0; ky < K; ++ky) {
              for (int64_t kx = 0; kx < K; ++kx) {
                const int64_t q = (y + 2 * pad - ky) * P + (x + 2 * pad - kx);
                const int64_t tap = (ci * K + ky) * K + kx;
                const T* __restrict wk = w + tap * O;
                T* __restrict dst = cur + q * O;
                for (int64_t o = 0; o < O; ++o) dst[o] += d * wk[o];
                for (int64_t j = 0; j < R; ++j) corr[q * R + j] += d * b[tap * R + j];
              }
            }
          }
        }
      }
      T* __restrict spikes = out + n * Hp * Wp * O;
      for (int64_t py = 0; py < Hp; ++py) {
        for (int64_t px = 0; px < Wp; ++px) {
          const int64_t q[4] = {(2 * py + pad) * P + 2 * px + pad, (2 * py + pad) * P + 2 * px + pad + 1,
                                (2 * py + pad + 1) * P + 2 * px + pad,
                                (2 * py + pad + 1) * P + 2 * px + pad + 1};
          T* __restrict mm = mem + (py * Wp + px) * O;
          T* __restrict sp = spikes + (py * Wp + px) * O;
          for (int64_t o = 0; o < O; ++o) {  // one pass: pool, then the Leaky step
            T in = -std::numeric_limits<T>::infinity();
            for (int k = 0; k < 4; ++k) {
              T v = cur[q[k] * O + o] + bias[o];
              for (int64_t j = 0; j < R; ++j) v += a_t[j * O + o] * corr[q[k] * R + j];
              in = std::max(in, v);
            }
            leaky_step<RESET, T>(mm + o, in, sp + o, beta, thr);
          }
        }
      }
    }
  }
}

// The whole batch: every image's arithmetic is the same whatever the thread count (the
// same spikes); a separate function per range keeps the restrict-qualified loops intact
// (a lambda body capturing the pointers ran 2x slower on one thread).
template <typename T, int RESET, int CC, int OO, int RR, int KK>
void member_layer(const T* m, const T* c, const T* base, const T* corr_in, const T* w,
                  const T* b, const T* a_t, const T* bias, T* out, int64_t steps,
                  int64_t batch, int64_t H, int64_t W, int64_t C_, int64_t O_, int64_t R_,
                  int64_t K_, int64_t S, int64_t offset, T beta, T thr) {
  at::parallel_for(0, batch, 1, [=](int64_t first, int64_t last) {
    member_images<T, RESET, CC, OO, RR, KK>(m, c, base, corr_in, w, b, a_t, bias, out, steps,
                                            batch, H, W, C_, O_, R_, K_, S, offset, beta, thr,
                                            first, last);
  });
}

void flip_delta_layer(torch::Tensor out, torch::Tensor member, torch::Tensor centre,
                      torch::Tensor base, torch::Tensor corr, int64_t offset, torch::Tensor weight,
                      torch::Tensor b, torch::Tensor a_t, torch::Tensor bias, int64_t steps,
                      double beta, double thr, int64_t reset) {
  for (const auto& t : {out, member, centre, base, corr, weight, b, a_t, bias})
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == member.scalar_type() && t.is_cpu(),
                "flip_delta_layer: every tensor must be a contiguous CPU tensor of one dtype");
  const int64_t N = member.size(0), H = member.size(1), W = member.size(2), C = member.size(3);
  const int64_t K = weight.size(1), O = weight.size(3), R = b.size(3), S = corr.size(1);
  TORCH_CHECK(N % steps == 0 && K % 2 == 1 && (reset == 1 || reset == 2),
              "flip_delta_layer: bad shapes or reset");
  AT_DISPATCH_FLOATING_TYPES(member.scalar_type(), "flip_delta_layer", [&] {
    auto run = reset == 1 ? member_layer<scalar_t, 1, 0, 0, 0, 0>
                          : member_layer<scalar_t, 2, 0, 0, 0, 0>;
    // the grid's CIFAR-10 (16 -> 32) and MNIST (8 -> 16) second layers, rank 1, 3 x 3
    if (R == 1 && K == 3 && C == 16 && O == 32)
      run = reset == 1 ? member_layer<scalar_t, 1, 16, 32, 1, 3>
                       : member_layer<scalar_t, 2, 16, 32, 1, 3>;
    if (R == 1 && K == 3 && C == 8 && O == 16)
      run = reset == 1 ? member_layer<scalar_t, 1, 8, 16, 1, 3>
                       : member_layer<scalar_t, 2, 8, 16, 1, 3>;
    run(member.data_ptr<scalar_t>(), centre.data_ptr<scalar_t>(), base.data_ptr<scalar_t>(),
        corr.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
        a_t.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), steps,
        N / steps, H, W, C, O, R, K, S, offset, scalar_t(beta), scalar_t(thr));
  });
}
"""


def _extension():
    return native.build("snn_es_flip_delta", _SOURCE, "flip_delta_layer")


def available() -> bool:
    return _extension() is not None


@dataclass(frozen=True)
class SharedConv:
    """Per image piece and chunk: the reference spikes, ``conv(s_c, W)``, every member's
    ``conv(s_c, B_c)`` and the centre's weight in the kernel's layout (built once here, not
    per member)."""

    centre: Tensor  # [T*B, H, W, C]
    base: Tensor  # [T*B, H, W, O]
    corr: Tensor  # [T*B, members * r, H, W] (NCHW: each member's rows contiguous)
    weight: Tensor  # [C, K, K, O]
    steps: int


def shared_conv(centre_spikes: Tensor, weight: Tensor, b: Tensor) -> SharedConv:
    """``centre_spikes`` [T, B, C, H, W]; ``weight`` [O, C, K, K] the centre's; ``b`` the
    chunk's factors [members, C*K*K, r] (``LowRankParams.b``)."""
    steps = centre_spikes.shape[0]
    maps = centre_spikes.flatten(0, 1).contiguous(memory_format=torch.channels_last)
    padding = weight.shape[-1] // 2
    filters = b.transpose(1, 2).reshape(-1, *weight.shape[1:])  # [members * r, C, K, K]
    return SharedConv(native.nhwc(maps), native.nhwc(F.conv2d(maps, weight, padding=padding)),
                      F.conv2d(maps, filters, padding=padding).contiguous(),
                      weight.permute(1, 2, 3, 0).contiguous(), steps)


def member_layer(shared: SharedConv, member_spikes: Tensor, a: Tensor, b: Tensor,
                 bias: Tensor, member: int, cfg: SNNSettings) -> Tensor:
    """Spikes [T, B, O, H/2, W/2] of chunk member ``member`` (its factors ``a`` [O, r], ``b``
    [C*K*K, r], ``bias`` [O]) from its input spikes [T, B, C, H, W]: the same function as
    ``models.hidden_layer(member_spikes, W + a @ b.T, bias, ...)`` with ``W`` the centre's
    weight given to ``shared_conv``."""
    extension = _extension()
    if extension is None:
        raise RuntimeError("the flip-delta kernel is not available (see the warning above)")
    maps = native.nhwc(member_spikes.flatten(0, 1))
    n, height, width, _ = maps.shape
    in_channels, k, _, out_channels = shared.weight.shape
    rank = a.shape[-1]
    out = torch.empty(n, height // 2, width // 2, out_channels, dtype=maps.dtype)
    beta, threshold = lif_constants(cfg)
    extension.flip_delta_layer(
        out, maps, shared.centre, shared.base, shared.corr, member * rank, shared.weight,
        b.reshape(in_channels, k, k, rank).contiguous(), a.t().contiguous(),
        bias.contiguous(), shared.steps, beta, threshold, native.RESETS[cfg.reset_mechanism])
    steps = shared.steps
    return out.view(steps, n // steps, *out.shape[1:]).permute(0, 1, 4, 2, 3)
