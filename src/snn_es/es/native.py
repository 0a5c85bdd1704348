"""The C++ kernels' build (``first_layer``, ``flip_delta``), the C++ they share (SIMD lanes
and the Leaky step) and the layout they read."""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor


RESETS = {"subtract": 1, "zero": 2}  # SNNSettings.reset_mechanism -> the kernels' RESET

# Prepended to each kernel's source. The Leaky step is lif.lif_scan's rule (the tests compare
# each kernel with the torch path); GCC/Clang vector extensions give the compiler's SIMD for
# this CPU where auto-vectorising missed the max-pool and the reset (V = 1: one lane).
SHARED_SOURCE = r"""
#include <cstring>
#include <limits>

template <typename T, int V> struct Lanes {
  typedef T type __attribute__((vector_size(sizeof(T) * V)));
};

// Lanes for O channels: the largest power of two dividing O within one 64-byte register
// (a wider vector type ran 2x slower); 1 for O = 0 (a shape known only at run time).
template <typename T> constexpr int lanes_for(int O) {
  int v = 1;
  while (O && O % (2 * v) == 0 && 2 * v * int(sizeof(T)) <= 64) v *= 2;
  return v;
}

template <typename vec, typename T> inline vec load_lanes(const T* p) {
  vec v;
  std::memcpy(&v, p, sizeof(vec));
  return v;
}

template <typename vec, typename T> inline void store_lanes(T* p, vec v) {
  std::memcpy(p, &v, sizeof(vec));
}

// One step of a vec of Leaky neurons (RESET 1: subtract, 2: zero; vec is Lanes<T, V>::type,
// or T itself for one neuron) with input current `in`: the membrane `mem` is updated in
// place, the spikes are written to `spikes`.
template <int RESET, typename vec, typename T>
inline void leaky_step(T* mem, vec in, T* spikes, T beta, T thr) {
  const vec zero = vec{}, one = zero + T(1);
  const vec prev = load_lanes<vec>(mem);
  const vec fired = prev - thr > zero ? one : zero;  // reset from the previous membrane
  const vec next = RESET == 1 ? (beta * prev + in) - fired * thr
                              : beta * ((one - fired) * prev) + in;
  store_lanes(mem, next);
  store_lanes(spikes, next - thr > zero ? one : zero);
}
"""


@functools.cache
def build(name: str, source: str, function: str, cflags: tuple[str, ...] = ()):
    """The compiled extension ``name`` exposing ``function`` (built at first use, cached on
    disk by torch), or None with one warning where it cannot be built (no C++ compiler or
    ninja). With OpenMP its ``at::parallel_for`` loops run on torch's intra-op threads
    (serial without ``-fopenmp``); where the compiler has no OpenMP it is built serial (the
    same results, one thread)."""
    from torch.utils.cpp_extension import load_inline

    for suffix, flags in (("", ["-fopenmp"]), ("_serial", [])):
        try:
            return load_inline(name + suffix, cpp_sources=SHARED_SOURCE + source, functions=[function],
                               extra_cflags=["-O3", "-march=native", *flags, *cflags],
                               extra_ldflags=flags)
        except Exception as failure:  # noqa: BLE001 - any build failure: try the next flags
            error = failure
    warnings.warn(f"the C++ kernel {name} could not be built ({type(error).__name__}: "
                  f"{str(error).splitlines()[0] if str(error) else ''}); install a C++ "
                  "compiler and ninja to use it", RuntimeWarning, stacklevel=3)
    return None


def nhwc(maps: Tensor) -> Tensor:
    """[N, C, H, W] -> a contiguous [N, H, W, C] (no copy when ``maps`` is channels-last)."""
    return maps.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
