"""The flip-delta kernel (es/flip_delta.py) computes a low-rank member's hidden layer exactly
as the dense path does: ``models.hidden_layer`` on the materialised weight ``W + a b^T``.
It needs a C++ compiler and ninja (built once, cached by torch); without them it skips."""

from __future__ import annotations

import pytest
import torch

from snn_es.es import flip_delta
from snn_es.lif import heaviside
from snn_es.models import hidden_layer
from snn_es.settings import SNNSettings

pytestmark = pytest.mark.skipif(not flip_delta.available(),
                                reason="the flip-delta kernel could not be built here")


def _problem(dtype, rank, size, members=3, seed=0):
    """Centre spikes, members' spikes (5% flipped each), the centre's conv weight and every
    member's factors and bias, scaled so that about a third of the outputs fire."""
    g = torch.Generator().manual_seed(seed)
    steps, batch, channels, out, k = 3, 4, 8, 16, 3
    centre = (torch.rand(steps, batch, channels, size, size, generator=g) < 0.3).to(dtype)
    flips = torch.rand(members, *centre.shape, generator=g) < 0.05
    spikes = torch.where(flips, 1 - centre, centre)
    weight = torch.randn(out, channels, k, k, generator=g, dtype=dtype) * 0.4
    a = torch.randn(members, out, rank, generator=g, dtype=dtype) * 0.3
    b = torch.randn(members, channels * k * k, rank, generator=g, dtype=dtype) * 0.3
    bias = torch.randn(members, out, generator=g, dtype=dtype) * 0.2
    return centre, spikes, weight, a, b, bias


@pytest.mark.parametrize("dtype,reset,rank,size", [
    (torch.float64, "subtract", 1, 8),
    (torch.float64, "zero", 2, 7),  # odd size: the pool drops the last row and column
    (torch.float64, "subtract", 3, 6),
    (torch.float32, "subtract", 1, 8),
])
def test_member_layer_equals_the_dense_layer(dtype, reset, rank, size):
    centre, spikes, weight, a, b, bias = _problem(dtype, rank, size)
    cfg = SNNSettings(channels=(8, 16), num_steps=centre.shape[0], reset_mechanism=reset)
    shared = flip_delta.shared_conv(centre, weight, b)
    fired = []
    for member in range(spikes.shape[0]):
        dense = weight + (a[member] @ b[member].T).reshape(weight.shape)
        want = hidden_layer(spikes[member], dense, bias[member], cfg, False, False, heaviside)
        got = flip_delta.member_layer(shared, spikes[member], a[member], b[member],
                                      bias[member], member, cfg)
        assert got.shape == want.shape == (3, 4, 16, size // 2, size // 2)
        assert torch.equal(got, want)
        fired.append(float(want.mean()))
    assert all(0.1 < rate < 0.9 for rate in fired)  # neither silent nor saturated


def test_the_reference_map_changes_nothing_but_the_work():
    """Any reference map gives the same spikes: the centre's only makes the flips few."""
    centre, spikes, weight, a, b, bias = _problem(torch.float64, 1, 8)
    cfg = SNNSettings(channels=(8, 16), num_steps=centre.shape[0])
    from_centre = flip_delta.shared_conv(centre, weight, b)
    from_silence = flip_delta.shared_conv(torch.zeros_like(centre), weight, b)
    for member in range(spikes.shape[0]):
        args = (spikes[member], a[member], b[member], bias[member], member, cfg)
        assert torch.equal(flip_delta.member_layer(from_centre, *args),
                           flip_delta.member_layer(from_silence, *args))


def test_mixed_dtypes_are_refused_with_a_clear_error():
    centre, spikes, weight, a, b, bias = _problem(torch.float64, 1, 8)
    cfg = SNNSettings(channels=(8, 16), num_steps=centre.shape[0])
    shared = flip_delta.shared_conv(centre, weight, b)
    with pytest.raises(RuntimeError, match="one dtype"):
        flip_delta.member_layer(shared, spikes[0].float(), a[0], b[0], bias[0], 0, cfg)


def test_the_spikes_do_not_depend_on_the_thread_count():
    """The kernel splits the images over torch's threads: each image's arithmetic stays the
    same, so float32 spikes are identical on 1 and 2 threads (a run does not change with
    the machine's core count)."""
    centre, spikes, weight, a, b, bias = _problem(torch.float32, 1, 8)
    cfg = SNNSettings(channels=(8, 16), num_steps=centre.shape[0])
    shared = flip_delta.shared_conv(centre, weight, b)
    threads = torch.get_num_threads()
    try:
        got = {}
        for count in (1, 2):
            torch.set_num_threads(count)
            got[count] = [flip_delta.member_layer(shared, spikes[m], a[m], b[m], bias[m], m, cfg)
                          for m in range(spikes.shape[0])]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(one, two) for one, two in zip(got[1], got[2], strict=True))
    assert any(bool(s.any()) for s in got[1])  # not trivially equal: some neurons fire
