"""snn_forward_check: passes on a live network, fails loudly on a dead or NaN one."""

from __future__ import annotations

import pytest
import torch

from snn_es.checks import SNNCheckError, forward_check
from snn_es.models import SNNSettings


def _data():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 1, 12, 12), dtype=torch.uint8, generator=gen)
    return images, torch.arange(16) % 10


@pytest.mark.parametrize("encoder", ["poisson", "deterministic", "repeat", "latency"])
def test_live_network_reports_rates_and_times(encoder):
    images, labels = _data()
    cfg = SNNSettings(input_shape=(1, 12, 12), channels=(4, 8), num_steps=4, threshold=0.3)
    report = forward_check(images, labels, cfg, encoder, seed=0)
    assert report["logits_shape"] == [16, 10]
    assert report["input_shape"] == [4, 16, 1, 12, 12]
    assert set(report["spike_rates"]) == {"lif1", "lif2", "lif_out"}
    assert 0 < report["spike_rates"]["lif1"] < 1
    assert report["logit_std_across_inputs"] > 0 and report["forward_s_median"] > 0


def test_dead_network_fails_naming_the_layer():
    images, labels = _data()
    cfg = SNNSettings(input_shape=(1, 12, 12), channels=(4, 8), num_steps=4, threshold=1e6)
    with pytest.raises(SNNCheckError, match="layer lif1 is dead"):
        forward_check(images, labels, cfg, "repeat", seed=0)


def test_nan_input_fails():
    images, labels = _data()
    nan_images = torch.full((16, 1, 12, 12), float("nan"))
    cfg = SNNSettings(input_shape=(1, 12, 12), channels=(4, 8), num_steps=4)
    with pytest.raises(SNNCheckError, match="NaN"):
        forward_check(nan_images, labels, cfg, "repeat", seed=0)
