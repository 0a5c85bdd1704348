"""The readout-fit reference: what a readout alone gets from an ES run's frozen network.

The run's initial network (its seed, init scales and encoder) is frozen; every image's
readout features ``s`` (the last hidden spikes through the readout's leaky filter, as in
``es/readout``) are computed once and standardised on the training images; a linear readout
is then fitted by Adam on cross-entropy, on the training images less a held-out part that
picks the epoch (the test images pick nothing). It is a reference, not ES: the stronger of
it and the ES run's frozen twin (``es.train_hidden: false``) is what training the spiking
layers has to beat. Randomness: the spikes of image piece i of a split from ``(seed,
"fit-spikes", split, i)``, the held-out images from ``(seed, "fit-validation")``, the
minibatch order of epoch e from ``(seed, "fit-batch", e)``.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from snn_es.encoders import encode, to_float
from snn_es.es.evaluate import STOCHASTIC_ENCODERS
from snn_es.es.readout import readout_features
from snn_es.es.run import initial_theta
from snn_es.seeding import generator_from
from snn_es.settings import ESSettings, ReadoutFitSettings, SNNSettings

FEATURE_PIECE = 250  # images per frozen forward (memory only: spikes are seeded per piece)


@torch.no_grad()
def frozen_features(images: Tensor, cfg: SNNSettings, es: ESSettings, encoder: str, seed: int,
                    split: str) -> Tensor:
    """Readout features [N, F] of the run's frozen initial network (float64)."""
    theta, layout = initial_theta(cfg, es, seed)
    params = layout.unflatten(theta)
    out = []
    for i, first in enumerate(range(0, len(images), FEATURE_PIECE)):
        x = to_float(images[first:first + FEATURE_PIECE])
        if encoder != "repeat":
            generator = (generator_from(seed, "fit-spikes", split, i)
                         if encoder in STOCHASTIC_ENCODERS else None)
            x = encode(encoder, x, cfg.num_steps, generator)
        out.append(readout_features(params, x, cfg, encoder == "repeat", fused=False))
    return torch.cat(out).double()


def fit_readout(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                test_labels: Tensor, num_classes: int, settings: ReadoutFitSettings,
                seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fit a linear readout on standardised features; (metrics, one row per epoch). The
    reported epoch is the one with the best held-out accuracy (the first, on ties)."""
    mean = train_features.mean(0)
    std = train_features.std(0).clamp_min(1e-6)  # a silent feature stays 0
    scaled, test_x = (train_features - mean) / std, (test_features - mean) / std
    order = torch.randperm(len(train_labels), generator=generator_from(seed, "fit-validation"))
    held = max(1, round(settings.validation_fraction * len(order)))
    val_x, val_y = scaled[order[:held]], train_labels[order[:held]]
    fit_x, fit_y = scaled[order[held:]], train_labels[order[held:]]
    readout = torch.nn.Linear(fit_x.shape[1], num_classes, dtype=torch.float64)
    torch.nn.init.zeros_(readout.weight)
    torch.nn.init.zeros_(readout.bias)
    optimizer = torch.optim.Adam(readout.parameters(), lr=settings.lr)
    rows = []
    start = time.perf_counter()
    for epoch in range(settings.epochs):
        order = torch.randperm(len(fit_y), generator=generator_from(seed, "fit-batch", epoch))
        for first in range(0, len(order), settings.batch_size):
            index = order[first:first + settings.batch_size]
            loss = torch.nn.functional.cross_entropy(readout(fit_x[index]), fit_y[index])
            loss = loss + settings.weight_decay * readout.weight.square().sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            rows.append({"epoch": epoch + 1,
                         "train_acc": _accuracy(readout, fit_x, fit_y),
                         "validation_acc": _accuracy(readout, val_x, val_y),
                         "test_acc": _accuracy(readout, test_x, test_labels),
                         "wall_s": round(time.perf_counter() - start, 3)})
    picked = max(rows, key=lambda row: (row["validation_acc"], -row["epoch"]))
    metrics = {"test_acc": picked["test_acc"], "train_acc": picked["train_acc"],
               "validation_acc": picked["validation_acc"], "epoch": picked["epoch"],
               "best_test_acc": max(row["test_acc"] for row in rows),
               "num_features": int(fit_x.shape[1]), "fit_wall_s": rows[-1]["wall_s"]}
    return metrics, rows


def _accuracy(readout: torch.nn.Linear, x: Tensor, labels: Tensor) -> float:
    return float((readout(x).argmax(1) == labels).double().mean())


def readout_fit_reference(subset: dict[str, Tensor], cfg: SNNSettings, es: ESSettings,
                          encoder: str, seed: int, settings: ReadoutFitSettings
                          ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The reference of one ES run: frozen features of its subset, then the fit."""
    start = time.perf_counter()
    features = {split: frozen_features(subset[f"{split}_images"], cfg, es, encoder, seed, split)
                for split in ("train", "test")}
    feature_s = time.perf_counter() - start
    metrics, rows = fit_readout(features["train"], subset["train_labels"], features["test"],
                                subset["test_labels"], cfg.num_classes, settings, seed)
    metrics["wall_s"] = round(feature_s + metrics["fit_wall_s"], 2)
    return metrics, rows
