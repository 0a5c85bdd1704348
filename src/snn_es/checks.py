"""snn_forward_check: one forward pass of the snnTorch SNN, checked for signs of life."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from snn_es.encoders import encode, to_float
from snn_es.errors import UserError
from snn_es.models import SNNSettings, make_snn, spike_rates
from snn_es.seeding import generator_from, seed_from


class SNNCheckError(UserError, RuntimeError):
    """The network is broken: NaN outputs or a layer that never spikes."""


def forward_check(images, labels, cfg: SNNSettings, encoder: str, seed: int,
                  repeats: int = 3) -> dict[str, Any]:
    """Shapes, finite loss, input-dependent logits, spike rate per layer, time per forward."""
    model = make_snn(cfg, seed_from(seed, "init"))
    x = to_float(images)
    if not torch.isfinite(x).all():
        # NaN pixels never cross the threshold, so they would pass as a merely dead layer.
        raise SNNCheckError(f"{encoder}: the input images contain NaN/inf")
    x_seq = encode(encoder, x, cfg.num_steps, generator_from(seed, "check-spikes"))
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            tick = time.perf_counter()
            logits, records = model(x_seq)
            times.append(time.perf_counter() - tick)
    loss = F.cross_entropy(logits, labels)
    if not torch.isfinite(logits).all() or not torch.isfinite(loss):
        raise SNNCheckError(f"{encoder}: the network's logits or loss are NaN/inf")
    rates = spike_rates(records)
    for layer, rate in rates.items():
        if layer != "lif_out" or cfg.readout == "spike_count":
            if rate == 0.0:
                raise SNNCheckError(
                    f"{encoder}: layer {layer} is dead (no spike in {len(labels)} images x "
                    f"{cfg.num_steps} steps); raise the input scale or lower snn.threshold")
    logit_std = float(logits.std(0).mean())
    if logit_std == 0.0:
        raise SNNCheckError(f"{encoder}: logits are the same for every input")
    return {
        "encoder": encoder,
        "input_shape": list(x_seq.shape),
        "logits_shape": list(logits.shape),
        "loss": float(loss),
        "logit_std_across_inputs": logit_std,
        "spike_rates": rates,
        "forward_s_median": statistics.median(times),
        "images_per_s": len(labels) / statistics.median(times),
    }
