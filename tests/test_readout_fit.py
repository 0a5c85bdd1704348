"""The readout-fit reference: frozen features of an ES run's initial network, a linear
readout fitted by Adam on them, seeded and reproducible."""

from __future__ import annotations

import pytest
import torch

from snn_es.es.readout import readout_features
from snn_es.es.run import initial_theta
from snn_es.readout_fit import fit_readout, frozen_features, readout_fit_reference
from snn_es.seeding import generator_from
from snn_es.settings import ReadoutFitSettings
from test_es import TINY, TINY_ES, tiny_subset


def test_frozen_features_are_the_initial_networks_readout_features():
    subset = tiny_subset()
    images = subset["train_images"]
    features = frozen_features(images, TINY, TINY_ES, "repeat", 0, "train")
    theta, layout = initial_theta(TINY, TINY_ES, 0)
    expected = readout_features(layout.unflatten(theta), images.float() / 255, TINY, True,
                                fused=False)
    torch.testing.assert_close(features, expected.double(), rtol=0, atol=0)
    poisson = frozen_features(images, TINY, TINY_ES, "poisson", 0, "train")
    assert torch.equal(poisson, frozen_features(images, TINY, TINY_ES, "poisson", 0, "train"))
    assert not torch.equal(poisson, frozen_features(images, TINY, TINY_ES, "poisson", 1,
                                                    "train"))


def test_the_fit_learns_separable_features_and_is_seeded():
    gen = generator_from(0, "synthetic")
    labels = torch.randint(0, 3, (300,), generator=gen)
    centres = torch.randn(3, 20, generator=gen, dtype=torch.float64) * 3
    features = 5 + 10 * (centres[labels] + torch.randn(300, 20, generator=gen,
                                                       dtype=torch.float64))
    settings = ReadoutFitSettings(epochs=20, batch_size=32, lr=0.01)
    metrics, rows = fit_readout(features[:200], labels[:200], features[200:], labels[200:], 3,
                                settings, seed=0)
    assert [row["epoch"] for row in rows] == list(range(1, 21))
    picked = rows[metrics["epoch"] - 1]  # the best held-out epoch, never the best test one
    assert picked["validation_acc"] == max(row["validation_acc"] for row in rows)
    assert metrics["test_acc"] == picked["test_acc"]
    assert metrics["test_acc"] > 0.9 and metrics["train_acc"] > 0.9
    again, _ = fit_readout(features[:200], labels[:200], features[200:], labels[200:], 3,
                           settings, seed=0)
    assert {k: v for k, v in again.items() if "wall" not in k} == \
        {k: v for k, v in metrics.items() if "wall" not in k}


def test_the_reference_of_a_tiny_run():
    metrics, rows = readout_fit_reference(tiny_subset(), TINY, TINY_ES, "poisson", 0,
                                          ReadoutFitSettings(epochs=2, batch_size=8))
    assert len(rows) == 2 and 0 <= metrics["test_acc"] <= 1
    assert metrics["num_features"] > 0 and metrics["wall_s"] >= 0
    with pytest.raises(ValueError, match="readout_fit"):
        ReadoutFitSettings(epochs=0)
    with pytest.raises(ValueError, match="validation_fraction"):
        ReadoutFitSettings(validation_fraction=1.0)
