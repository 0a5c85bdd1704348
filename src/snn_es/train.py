"""Backprop baselines on in-memory tensors: a conventional CNN and the SNN trained with BPTT.

Images arrive as uint8 [N, C, H, W] (or floats in [0, 1]) with int64 labels [N]; each
minibatch is converted with ``to_float`` and moved to ``settings.device``.

Every random draw has an explicit seed (see ``snn_es.seeding``):

* weight init      ``seed_from(seed, "init")`` (global RNG forked and restored)
* minibatch order  ``generator_from(seed, "shuffle", epoch)``
* poisson spikes   ``generator_from(seed, epoch, batch)`` while training,
                   ``generator_from(seed, "eval", split, batch)`` while evaluating, so every
                   evaluation of a split sees the same spikes (for a given eval batch size).

Both trainers return ``(metrics, rows)``: ``metrics`` has ``train_acc``, ``train_loss``,
``test_acc``, ``test_loss``, ``epochs``, ``wall_s`` (plus ``num_params`` and, for the SNN,
``spike_rate_<layer>`` on the test split); ``rows`` has one dict per epoch with the running
train loss/accuracy of that epoch's minibatches, the test loss/accuracy after it, and the
elapsed ``wall_s``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from snn_es.encoders import ENCODERS, encode, to_float
from snn_es.io import atomic_write_json, atomic_write_text
from snn_es.models import BaselineCNN, SNNSettings, make_snn, seeded_init
from snn_es.seeding import generator_from, seed_from

Tensor = torch.Tensor
# (float images on the device, batch index) -> logits, or (logits, spike records)
ModelFn = Callable[[Tensor, int], Tensor | tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings shared by both trainers."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_batch_size: int = 256
    device: str = "cpu"
    # True: final train_acc/train_loss come from a clean pass over the whole training set
    # with the final weights; False: from the last epoch's running minibatch averages.
    final_train_eval: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"TrainSettings.epochs must be >= 0; got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("TrainSettings batch sizes must be >= 1")


@torch.no_grad()
def evaluate(
    model_fn: ModelFn, x: Tensor, y: Tensor, batch_size: int, device: str = "cpu"
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model_fn`` over (x, y), in minibatches.

    ``model_fn(images, batch_index)`` gets float images in [0, 1] on ``device``; the batch
    index lets stochastic models seed their noise per batch. If it returns
    ``(logits, records)``, the mean spike rate per layer is added as ``spike_rate_<layer>``.
    """
    num = len(x)
    if num == 0:
        raise ValueError("evaluate needs at least one sample")
    loss_sum, correct = 0.0, 0
    spike_sums: dict[str, float] = {}
    for index, start in enumerate(range(0, num, batch_size)):
        xb = to_float(x[start : start + batch_size]).to(device)
        yb = y[start : start + batch_size].to(device)
        out = model_fn(xb, index)
        logits, records = out if isinstance(out, tuple) else (out, {})
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += int((logits.argmax(1) == yb).sum())
        for name, spikes in records.items():
            # weight each batch's rate by its size so the result is a per-sample mean
            rate = float(spikes.float().mean()) * len(yb)
            spike_sums[name] = spike_sums.get(name, 0.0) + rate
    metrics = {"acc": correct / num, "loss": loss_sum / num}
    metrics.update({f"spike_rate_{name}": total / num for name, total in spike_sums.items()})
    return metrics


def _fit(
    model: nn.Module,
    train_fn: Callable[[Tensor, int, int], Tensor],
    eval_fn: Callable[[str], ModelFn],
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    settings: TrainSettings,
    seed: int,
    progress: bool,
    desc: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Adam + cross-entropy loop shared by both trainers.

    ``train_fn(images, epoch, batch)`` returns training logits; ``eval_fn(split)`` returns
    the model function that ``evaluate`` uses on that split.
    """
    train_x, train_y, test_x, test_y = data
    if len(train_x) == 0:
        raise ValueError("training set is empty")
    start_time = time.perf_counter()
    device = settings.device
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    num_train = len(train_x)
    num_batches = math.ceil(num_train / settings.batch_size)

    def run_eval(split: str, x: Tensor, y: Tensor) -> dict[str, float]:
        model.eval()
        return evaluate(eval_fn(split), x, y, settings.eval_batch_size, device)

    rows: list[dict[str, Any]] = []
    test_metrics: dict[str, float] | None = None
    bar = tqdm(total=settings.epochs * num_batches, desc=desc, disable=not progress, mininterval=1)
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(num_train, generator=generator_from(seed, "shuffle", epoch))
        loss_sum, correct = 0.0, 0
        for batch in range(num_batches):
            idx = order[batch * settings.batch_size : (batch + 1) * settings.batch_size]
            xb = to_float(train_x[idx]).to(device)
            yb = train_y[idx].to(device)
            logits = train_fn(xb, epoch, batch)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.detach().argmax(1) == yb).sum())
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", refresh=False)
        test_metrics = run_eval("test", test_x, test_y)
        rows.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / num_train,
                "train_acc": correct / num_train,
                "test_loss": test_metrics["loss"],
                "test_acc": test_metrics["acc"],
                "wall_s": time.perf_counter() - start_time,
            }
        )
    bar.close()

    if test_metrics is None:  # epochs == 0: report the untrained model
        test_metrics = run_eval("test", test_x, test_y)
    if settings.final_train_eval or not rows:
        train_metrics = run_eval("train", train_x, train_y)
        train_loss, train_acc = train_metrics["loss"], train_metrics["acc"]
    else:
        train_loss, train_acc = rows[-1]["train_loss"], rows[-1]["train_acc"]
    metrics: dict[str, Any] = {
        "train_acc": train_acc,
        "train_loss": train_loss,
        "test_acc": test_metrics["acc"],
        "test_loss": test_metrics["loss"],
        "epochs": settings.epochs,
        "num_params": sum(p.numel() for p in model.parameters()),
    }
    metrics.update({k: v for k, v in test_metrics.items() if k.startswith("spike_rate_")})
    metrics["wall_s"] = time.perf_counter() - start_time
    return metrics, rows


def _num_classes(num_classes: int | None, *labels: Tensor) -> int:
    if num_classes is not None:
        return num_classes
    return int(max(int(y.max()) for y in labels if len(y))) + 1


def train_cnn(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    settings: TrainSettings,
    seed: int,
    progress: bool = True,
    num_classes: int | None = None,
    channels: tuple[int, int, int] = (32, 64, 128),
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train ``BaselineCNN`` with Adam; ``num_classes`` defaults to max label + 1."""
    input_shape = tuple(train_x.shape[1:])
    classes = _num_classes(num_classes, train_y, test_y)
    with seeded_init(seed_from(seed, "init")):
        model = BaselineCNN(input_shape, classes, channels)
    model.to(settings.device)

    def train_fn(images: Tensor, epoch: int, batch: int) -> Tensor:
        return model(images)

    def eval_fn(split: str) -> ModelFn:
        return lambda images, index: model(images)

    data = (train_x, train_y, test_x, test_y)
    return _fit(model, train_fn, eval_fn, data, settings, seed, progress, "cnn")


def train_snn_bptt(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    cfg: SNNSettings,
    settings: TrainSettings,
    seed: int,
    encoder: str = "poisson",
    progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train the snnTorch ``SNN`` by backprop through time with surrogate gradients.

    Inputs are encoded with ``encoder`` over ``cfg.num_steps`` steps; poisson spikes come
    from ``generator_from(seed, epoch, batch)`` (training) and
    ``generator_from(seed, "eval", split, batch)`` (evaluation).
    """
    if encoder not in ENCODERS:
        valid = ", ".join(sorted(ENCODERS))
        raise ValueError(f"unknown encoder {encoder!r}; valid encoders: {valid}")
    if tuple(train_x.shape[1:]) != cfg.input_shape:
        raise ValueError(
            f"images have shape {tuple(train_x.shape[1:])} but SNNSettings.input_shape is "
            f"{cfg.input_shape}"
        )
    model = make_snn(cfg, seed_from(seed, "init")).to(settings.device)

    def train_fn(images: Tensor, epoch: int, batch: int) -> Tensor:
        x_seq = encode(encoder, images, cfg.num_steps, generator_from(seed, epoch, batch))
        logits, _ = model(x_seq)
        return logits

    def eval_fn(split: str) -> ModelFn:
        def model_fn(images: Tensor, index: int) -> tuple[Tensor, dict[str, Tensor]]:
            gen = generator_from(seed, "eval", split, index)
            return model(encode(encoder, images, cfg.num_steps, gen))

        return model_fn

    data = (train_x, train_y, test_x, test_y)
    return _fit(model, train_fn, eval_fn, data, settings, seed, progress, f"snn-{encoder}")


def write_training_outputs(
    metrics: dict[str, Any], rows: list[dict[str, Any]], metrics_path, csv_path,
    resolved: dict[str, Any],
) -> None:
    """A trainer's metrics JSON (with the resolved settings saved beside it) and epoch CSV."""
    atomic_write_json(metrics_path, {**metrics, "config": resolved})
    atomic_write_text(csv_path, pd.DataFrame(rows).to_csv(index=False))
