"""Backprop trainers: short runs on separable synthetic data lower the loss, reproducibly."""

from __future__ import annotations

import pytest
import torch

from snn_es.encoders import generator_from
from snn_es.models import SNNSettings
from snn_es.train import TrainSettings, evaluate, train_cnn, train_snn_bptt

SHAPE = (1, 8, 8)
METRIC_KEYS = {"train_acc", "train_loss", "test_acc", "test_loss", "epochs", "wall_s"}
ROW_KEYS = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "wall_s"}


def separable(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images: class 0 is bright on the left half, class 1 on the right, plus noise."""
    labels = torch.arange(num) % 2
    images = (torch.rand(num, *SHAPE, generator=generator_from(seed)) * 60).to(torch.uint8)
    images[labels == 0, :, :, : SHAPE[2] // 2] += 180
    images[labels == 1, :, :, SHAPE[2] // 2 :] += 180
    return images, labels


@pytest.fixture(scope="module")
def data():
    train_x, train_y = separable(48, seed=1)
    test_x, test_y = separable(16, seed=2)
    return train_x, train_y, test_x, test_y


def without_wall_time(metrics: dict, rows: list[dict]) -> tuple[dict, list[dict]]:
    strip = lambda d: {k: v for k, v in d.items() if k != "wall_s"}  # noqa: E731
    return strip(metrics), [strip(row) for row in rows]


def test_evaluate_accuracy_and_loss():
    x = torch.zeros(5, 1, 2, 2, dtype=torch.uint8)
    y = torch.tensor([0, 1, 0, 0, 1])
    logits = torch.tensor([2.0, 0.0])  # always predicts class 0
    seen = []

    def model_fn(images, index):
        seen.append((index, len(images), images.dtype))
        return logits.expand(len(images), 2)

    metrics = evaluate(model_fn, x, y, batch_size=2)
    assert metrics["acc"] == pytest.approx(3 / 5)
    expected = torch.nn.functional.cross_entropy(logits.expand(5, 2), y).item()
    assert metrics["loss"] == pytest.approx(expected)
    assert seen == [(0, 2, torch.float32), (1, 2, torch.float32), (2, 1, torch.float32)]


def test_train_cnn_lowers_the_loss_and_is_reproducible(data):
    settings = TrainSettings(epochs=3, batch_size=16, lr=1e-2)
    kwargs = dict(seed=0, progress=False, channels=(4, 8, 8))
    untrained, _ = train_cnn(*data, TrainSettings(epochs=0), **kwargs)
    metrics, rows = train_cnn(*data, settings, **kwargs)
    assert METRIC_KEYS <= metrics.keys() and metrics["epochs"] == 3
    assert [row["epoch"] for row in rows] == [1, 2, 3] and ROW_KEYS <= rows[0].keys()
    assert metrics["train_loss"] < untrained["train_loss"] - 0.05
    assert metrics["test_loss"] < untrained["test_loss"] - 0.05
    again = train_cnn(*data, settings, **kwargs)
    assert without_wall_time(*again) == without_wall_time(metrics, rows)


@pytest.mark.parametrize("encoder", ["poisson", "repeat"])
def test_train_snn_bptt_lowers_the_loss_and_is_reproducible(data, encoder):
    cfg = SNNSettings(input_shape=SHAPE, num_classes=2, channels=(4, 8), num_steps=4)
    settings = TrainSettings(epochs=3, batch_size=16, lr=1e-2)
    untrained, _ = train_snn_bptt(
        *data, cfg, TrainSettings(epochs=0), seed=0, encoder=encoder, progress=False
    )
    metrics, rows = train_snn_bptt(*data, cfg, settings, seed=0, encoder=encoder, progress=False)
    assert METRIC_KEYS <= metrics.keys() and len(rows) == 3
    assert {"spike_rate_lif1", "spike_rate_lif2", "spike_rate_lif_out"} <= metrics.keys()
    assert metrics["train_loss"] < untrained["train_loss"] - 0.05
    assert metrics["train_acc"] > 0.8
    again = train_snn_bptt(*data, cfg, settings, seed=0, encoder=encoder, progress=False)
    assert without_wall_time(*again) == without_wall_time(metrics, rows)


def test_train_snn_bptt_checks_its_inputs(data):
    cfg = SNNSettings(input_shape=SHAPE, num_classes=2, channels=(4, 8), num_steps=4)
    with pytest.raises(ValueError, match="valid encoders"):
        train_snn_bptt(*data, cfg, TrainSettings(epochs=1), seed=0, encoder="rate")
    wrong = SNNSettings(input_shape=(3, 8, 8), num_classes=2, channels=(4, 8))
    with pytest.raises(ValueError, match="input_shape"):
        train_snn_bptt(*data, wrong, TrainSettings(epochs=1), seed=0, progress=False)
