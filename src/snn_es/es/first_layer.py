"""Every low-rank member's first hidden layer (conv -> MaxPool(2) -> LIF) from the chunk's
shared conv: one fused C++ kernel for the whole chunk (``population._shared_first_layer``
on the fused CPU path).

Why: where the chunk shares its input (common spikes, the ``repeat`` image), member c's
first-layer current is ``W x + A_c (B_c^T x)``: one conv for the chunk plus a rank-r
correction. The compiled pool + LIF kernel it replaces ran once per member: it re-read the
chunk's shared ``W x`` (26 MB per MNIST ``poisson`` generation piece), wrote the member's
whole current to memory and read it back, in a scalar loop; that was 42% of a MNIST
``poisson`` flip-delta generation (profiler). This kernel reads each image's shared conv once for all members
(cache-sized tiles), never writes a current, and writes the spikes channels-last, the
layout the next layer's conv and the flip-delta kernel read.

Same arithmetic as ``population._low_rank_pool_lif`` step by step (``(W x + bias) + corr_j
a_j`` in that order, max-pool, ``lif.lif_scan``'s Leaky rule), built with
``-ffp-contract=off`` as torch.compile's kernels are, so the spikes are bit-identical to
the eager and the compiled path (tested in float32 and float64).
"""

from __future__ import annotations

from torch import Tensor

from snn_es.es import native
from snn_es.lif import lif_constants
from snn_es.settings import SNNSettings

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <vector>

// Spikes out[m] [T*B, Hp, Wp, O] (NHWC; one tensor per member, each freed on its own) of a
// chunk's M members from base = conv(x, W) [S, H, W, O] and corr = conv(x, B) [S, H, W, M*R] (both NHWC: a
// pixel's channels, and its members' corrections, contiguous), a_t [M, R, O] (A_c
// transposed), bias [M, O]; S = T*B (step-major) for a per-step input, S = B for a static
// one (the repeat image: the same current at every step). Images first .. last - 1.
// OO, RR: O and R as compile-time constants for the shapes the configs use (then O lanes
// at once: auto-vectorising missed the max-pool), 0 for any other shape (one lane).
template <typename T, int RESET, int OO, int RR>
void chunk_images(const T* __restrict base, const T* __restrict corr, const T* __restrict a_t,
                  const T* __restrict bias, T* const* __restrict out, int64_t M, int64_t steps,
                  int64_t batch, bool is_static, int64_t H, int64_t W, int64_t O_, int64_t R_,
                  T beta, T thr, int64_t first, int64_t last) {
  constexpr int V = lanes_for<T>(OO);  // lanes: all O channels of a pixel at once
  using vec = typename Lanes<T, V>::type;
  const int64_t O = OO ? OO : O_, R = RR ? RR : R_;
  const int64_t Hp = H / 2, Wp = W / 2, MR = M * R, plane = Hp * Wp * O;
  // per member: the pooled current and the membrane of every neuron of one image
  std::vector<T> in_v(M * plane), mem_v(M * plane);
  T* __restrict in = in_v.data();
  T* __restrict mem = mem_v.data();
  for (int64_t img = first; img < last; ++img) {
    std::fill(mem_v.begin(), mem_v.end(), T(0));
    for (int64_t t = 0; t < steps; ++t) {
      if (!is_static || t == 0) {
        const int64_t n = is_static ? img : t * batch + img;
        const T* __restrict bn = base + n * H * W * O;
        const T* __restrict cn = corr + n * H * W * MR;
        for (int64_t py = 0; py < Hp; ++py) {
          for (int64_t px = 0; px < Wp; ++px) {
            const int64_t q[4] = {(2 * py) * W + 2 * px, (2 * py) * W + 2 * px + 1,
                                  (2 * py + 1) * W + 2 * px, (2 * py + 1) * W + 2 * px + 1};
            for (int64_t m = 0; m < M; ++m) {
              T* __restrict dst = in + m * plane + (py * Wp + px) * O;
              for (int64_t o = 0; o < O; o += V) {
                const vec bm = load_lanes<vec>(bias + m * O + o);
                vec pooled = vec{} - std::numeric_limits<T>::infinity();
                for (int k = 0; k < 4; ++k) {  // (W x + bias) + sum_j corr_j a_j, then the max
                  vec v = load_lanes<vec>(bn + q[k] * O + o) + bm;
                  for (int64_t j = 0; j < R; ++j)
                    v = v + cn[q[k] * MR + m * R + j] * load_lanes<vec>(a_t + (m * R + j) * O + o);
                  pooled = v > pooled ? v : pooled;
                }
                store_lanes(dst + o, pooled);
              }
            }
          }
        }
      }
      for (int64_t m = 0; m < M; ++m) {  // the Leaky step of every neuron, as lif.lif_scan
        T* __restrict mm = mem + m * plane;
        const T* __restrict im = in + m * plane;
        T* __restrict sp = out[m] + (t * batch + img) * plane;
        for (int64_t i = 0; i < plane; i += V)
          leaky_step<RESET>(mm + i, load_lanes<vec>(im + i), sp + i, beta, thr);
      }
    }
  }
}

// The whole batch, its images split over torch's intra-op threads (each image has its own
// neurons; a function per range keeps the restrict-qualified loops).
template <typename T, int RESET, int OO, int RR>
void chunk_layer(const T* base, const T* corr, const T* a_t, const T* bias, T* const* out, int64_t M,
                 int64_t steps, int64_t batch, bool is_static, int64_t H, int64_t W, int64_t O,
                 int64_t R, T beta, T thr) {
  at::parallel_for(0, batch, 1, [=](int64_t first, int64_t last) {
    chunk_images<T, RESET, OO, RR>(base, corr, a_t, bias, out, M, steps, batch, is_static, H,
                                   W, O, R, beta, thr, first, last);
  });
}

void low_rank_first_layer(std::vector<torch::Tensor> out, torch::Tensor base, torch::Tensor corr,
                          torch::Tensor a_t, torch::Tensor bias, int64_t steps, bool is_static,
                          double beta, double thr, int64_t reset) {
  std::vector<torch::Tensor> all = {base, corr, a_t, bias};
  all.insert(all.end(), out.begin(), out.end());
  for (const auto& t : all)
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == base.scalar_type() && t.is_cpu(),
                "low_rank_first_layer: every tensor must be a contiguous CPU tensor of one dtype");
  const int64_t S = base.size(0), H = base.size(1), W = base.size(2), O = base.size(3);
  const int64_t M = a_t.size(0), R = a_t.size(1);
  TORCH_CHECK(corr.size(3) == M * R && int64_t(out.size()) == M && (is_static || S % steps == 0) && (reset == 1 || reset == 2),
              "low_rank_first_layer: bad shapes or reset");
  const int64_t batch = is_static ? S : S / steps;
  AT_DISPATCH_FLOATING_TYPES(base.scalar_type(), "low_rank_first_layer", [&] {
    std::vector<scalar_t*> outs;
    for (auto& t : out) outs.push_back(t.data_ptr<scalar_t>());
    auto run = reset == 1 ? chunk_layer<scalar_t, 1, 0, 0> : chunk_layer<scalar_t, 2, 0, 0>;
    // the grid's CIFAR-10 (16) and MNIST (8) first layers, rank 1
    if (R == 1 && O == 16) run = reset == 1 ? chunk_layer<scalar_t, 1, 16, 1> : chunk_layer<scalar_t, 2, 16, 1>;
    if (R == 1 && O == 8) run = reset == 1 ? chunk_layer<scalar_t, 1, 8, 1> : chunk_layer<scalar_t, 2, 8, 1>;
    run(base.data_ptr<scalar_t>(), corr.data_ptr<scalar_t>(), a_t.data_ptr<scalar_t>(),
        bias.data_ptr<scalar_t>(), outs.data(), M, steps, batch, is_static, H, W,
        O, R, scalar_t(beta), scalar_t(thr));
  });
}
"""

def _extension():
    return native.build("snn_es_first_layer", _SOURCE, "low_rank_first_layer",
                        ("-ffp-contract=off",))


def available() -> bool:
    return _extension() is not None


def chunk_spikes(base: Tensor, corr: Tensor, a: Tensor, bias: Tensor, static: bool,
                 cfg: SNNSettings) -> list[Tensor]:
    """Spikes [T, B, O, H/2, W/2] (channels-last) of each of the chunk's M members.

    ``base`` = ``W x`` and ``corr`` = ``B^T x`` (every member's r filters) are conv outputs
    [S, O, H, W] and [S, M*r, H, W], S = T*B (or B with a ``static`` input); ``a`` [M, O, r]
    holds the members' A factors, ``bias`` [M, O] their biases."""
    extension = _extension()
    if extension is None:
        raise RuntimeError("the first-layer kernel is not available (see the warning above)")
    steps = cfg.num_steps
    base_nhwc, corr_nhwc = native.nhwc(base), native.nhwc(corr)
    s, height, width, channels = base_nhwc.shape
    members = a.shape[0]
    batch = s if static else s // steps
    # one tensor per member: a chunk's spikes in one block (67 MB for a CIFAR-10 piece)
    # would be past malloc's mmap threshold, page-faulted in anew every piece
    out = [base.new_empty(steps * batch, height // 2, width // 2, channels)
           for _ in range(members)]
    beta, threshold = lif_constants(cfg)
    extension.low_rank_first_layer(out, base_nhwc, corr_nhwc, a.transpose(1, 2).contiguous(),
                                   bias.contiguous(), steps, static, beta, threshold,
                                   native.RESETS[cfg.reset_mechanism])
    return [spikes.view(steps, batch, *spikes.shape[1:]).permute(0, 1, 4, 2, 3)
            for spikes in out]
