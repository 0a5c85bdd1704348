"""The first-layer kernel (es/first_layer.py) gives every member of a chunk exactly the spikes
of ``population._low_rank_pool_lif``, the path it replaces (bit for bit: the committed
runs were made with that path). It needs a C++ compiler and ninja; without them it skips."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from snn_es.es import first_layer
from snn_es.es.population import _low_rank_pool_lif
from snn_es.lif import lif_constants
from snn_es.settings import SNNSettings

pytestmark = pytest.mark.skipif(not first_layer.available(),
                                reason="the first-layer kernel could not be built here")


def _problem(dtype, out, rank, size, static, members=3, steps=3, batch=4, seed=0):
    """The chunk's shared conv ``W x`` and corrections ``B_c^T x`` of random 0/1 input spikes
    (or a static image), and every member's A factor and bias, scaled so that a fair share
    of the neurons fire."""
    g = torch.Generator().manual_seed(seed)
    images = batch if static else steps * batch
    x = torch.rand(images, 2, size, size, generator=g, dtype=dtype)
    if not static:
        x = (x < 0.3).to(dtype)
    weight = torch.randn(out, 2, 3, 3, generator=g, dtype=dtype) * 0.5
    filters = torch.randn(members * rank, 2, 3, 3, generator=g, dtype=dtype) * 0.5
    base, corr = F.conv2d(x, weight, padding=1), F.conv2d(x, filters, padding=1)
    a = torch.randn(members, out, rank, generator=g, dtype=dtype) * 0.3
    bias = torch.randn(members, out, generator=g, dtype=dtype) * 0.2
    return base, corr, a, bias


def _reference(base, corr, a, bias, static, cfg):
    beta, threshold = lif_constants(cfg)
    rank = a.shape[-1]
    return [_low_rank_pool_lif(base, corr[:, c * rank:(c + 1) * rank], a[c], bias[c],
                               cfg.num_steps, beta, threshold, cfg.reset_mechanism, static)
            for c in range(a.shape[0])]


@pytest.mark.parametrize("dtype,reset,out,rank,size,static", [
    (torch.float32, "subtract", 8, 1, 8, False),  # MNIST's layer: the vector path
    (torch.float32, "subtract", 16, 1, 8, True),  # CIFAR-10's, the repeat image
    (torch.float64, "zero", 16, 1, 6, False),
    (torch.float64, "subtract", 5, 2, 7, False),  # any other shape: one lane; odd size
    (torch.float64, "zero", 5, 3, 6, True),
])
def test_chunk_spikes_equal_the_per_member_path(dtype, reset, out, rank, size, static):
    cfg = SNNSettings(channels=(out, 4), num_steps=3, reset_mechanism=reset)
    base, corr, a, bias = _problem(dtype, out, rank, size, static)
    got = first_layer.chunk_spikes(base, corr, a, bias, static, cfg)
    want = _reference(base, corr, a, bias, static, cfg)
    assert [spikes.shape for spikes in got] == [(3, 4, out, size // 2, size // 2)] * 3
    for member, spikes in enumerate(want):
        assert torch.equal(got[member], spikes)
        assert 0.05 < float(spikes.mean()) < 0.95  # neither silent nor saturated
    # channels-last per member: what the next conv and the flip-delta kernel read, no copy
    assert got[0].flatten(0, 1).is_contiguous(memory_format=torch.channels_last)


def test_the_spikes_do_not_depend_on_the_thread_count():
    cfg = SNNSettings(channels=(8, 4), num_steps=3)
    base, corr, a, bias = _problem(torch.float32, 8, 1, 8, False)
    threads = torch.get_num_threads()
    try:
        got = {}
        for count in (1, 2):
            torch.set_num_threads(count)
            got[count] = first_layer.chunk_spikes(base, corr, a, bias, False, cfg)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(one, two) for one, two in zip(got[1], got[2], strict=True))
    assert any(bool(spikes.any()) for spikes in got[1])


def test_mixed_dtypes_are_refused_with_a_clear_error():
    cfg = SNNSettings(channels=(8, 4), num_steps=3)
    base, corr, a, bias = _problem(torch.float64, 8, 1, 8, False)
    with pytest.raises(RuntimeError, match="one dtype"):
        first_layer.chunk_spikes(base, corr.float(), a, bias, False, cfg)
