"""The ES generation loop: minibatches, evaluation, updates, logging, checkpoints, resume.

Randomness: initial weights from ``(seed, "init")``, the minibatch of generation g from
``(seed, "batch", g)``, noise and spikes as in ``strategy`` / ``evaluate``. Nothing depends
on wall-clock or on what ran before, so a run resumed from a checkpoint continues exactly as
the uninterrupted run would have.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from snn_es.encoders import to_float
from snn_es.es.evaluate import PopulationTask, evaluate_population
from snn_es.es.params import ParamLayout
from snn_es.es.strategy import ESSettings, OpenAIES
from snn_es.errors import UserError
from snn_es.io import atomic_torch_save, atomic_write_json, atomic_write_text, sha256_bytes, torch_load
from snn_es.models import SNNConfig, make_snn
from snn_es.seeding import generator_from, seed_from

LOG_COLUMNS = (
    "generation", "fitness_mean", "fitness_max", "batch_acc", "test_acc", "sigma", "lr",
    "grad_norm", "wall_s", "member_evals_per_s",
)


class ESDivergedError(UserError, RuntimeError):
    """Fitness became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class RunSettings:
    generations: int = 100
    batch_size: int = 64  # minibatch shared by the whole population in a generation
    eval_every: int = 10  # test accuracy of the centre every k generations (and at the end)
    checkpoint_every: int = 10  # K: atomic checkpoint every K generations
    mode: str = "chunked"  # sequential | chunked
    chunk_size: int = 16  # members per batched forward pass (chunked)
    spike_noise: str = "shared"  # shared | per_member (poisson only)
    fused: bool = False  # compiled pool + LIF kernels and channels-last convs (evaluation)
    fitness: str = "cross_entropy"  # cross_entropy | accuracy | margin (what ES maximises)
    init_readout_scale: float = 1.0  # multiplies the initial fc weights and bias
    eval_batch_size: int = 250  # images per forward when measuring accuracy


ES_KEYS = ("population", "sigma", "sigma_final", "lr", "lr_schedule", "lr_final_ratio",
           "optimizer", "momentum", "weight_decay", "rank", "noise_scale")
RUN_KEYS = ("generations", "batch_size", "eval_every", "checkpoint_every", "chunk_size",
            "spike_noise", "fused", "fitness", "init_readout_scale")


def settings_from_config(es: dict[str, Any], mode: str) -> tuple[ESSettings, RunSettings]:
    """Split the config's ``es`` section into strategy and run-loop settings."""
    strategy = ESSettings(**{k: es[k] for k in ES_KEYS if k in es})
    run = RunSettings(mode=mode, **{k: es[k] for k in RUN_KEYS if k in es})
    return strategy, run


def _accuracy(task: PopulationTask, params: dict[str, Tensor], images: Tensor, labels: Tensor,
              batch_size: int, key: str) -> float:
    """Accuracy of one parameter set; stochastic spikes from fixed per-batch seeds."""
    correct = 0
    with torch.no_grad():
        for i, start in enumerate(range(0, len(labels), batch_size)):
            x = to_float(images[start:start + batch_size])
            y = labels[start:start + batch_size]
            # A fixed key per batch makes accuracies comparable across generations.
            eval_task = PopulationTask(task.cfg, task.layout, task.encoder,
                                       seed_from(task.seed, key, i), fused=task.fused)
            _, acc = eval_task.score(params, eval_task.inputs(x, 0, None), y)
            correct += round(float(acc) * len(y))
    return correct / len(labels)


def fingerprint(*parts: Any) -> str:
    return sha256_bytes(json.dumps(parts, sort_keys=True, default=str).encode())


def run_es(
    subset: dict[str, Tensor],
    cfg: SNNConfig,
    es_settings: ESSettings,
    run: RunSettings,
    encoder: str,
    seed: int,
    checkpoint_path: str | Path,
    data_id: str = "",
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], Tensor]:
    """Train the SNN's weights with ES. Returns (metrics, per-generation rows, final theta).

    ``stop_after`` ends the loop early after that many generations (simulates a kill; the
    checkpoint written so far is what a later call resumes from).
    """
    checkpoint_path = Path(checkpoint_path)
    model = make_snn(cfg, seed_from(seed, "init"))
    layout = ParamLayout.of(model)
    with torch.no_grad():
        # A smaller readout starts the membrane logits near zero (cross-entropy ~ ln K).
        model.fc.weight.mul_(run.init_readout_scale)
        model.fc.bias.mul_(run.init_readout_scale)
    theta = layout.flatten(dict(model.named_parameters()))
    strategy = OpenAIES(theta, es_settings, seed, run.generations, shapes=layout.shapes)
    task = PopulationTask(cfg, layout, encoder, seed, run.spike_noise, fused=run.fused,
                          fitness=run.fitness)
    train_x, train_y = subset["train_images"], subset["train_labels"]
    test_x, test_y = subset["test_images"], subset["test_labels"]
    ident = fingerprint(asdict(cfg), asdict(es_settings), asdict(run), encoder, seed, data_id)

    rows: list[dict[str, Any]] = []
    start_gen, elapsed = 0, 0.0
    saved_gen: int | None = None  # generation of the newest checkpoint of *this* run
    if checkpoint_path.exists():
        state = torch_load(checkpoint_path)
        if state["fingerprint"] == ident:
            strategy.load_state_dict(state["strategy"])
            rows, start_gen, elapsed = state["rows"], state["generation"] + 1, state["elapsed"]
            saved_gen = state["generation"]
            print(f"resuming from {checkpoint_path} at generation {start_gen}")
        else:
            print(f"ignoring {checkpoint_path}: it belongs to different settings")

    def save_checkpoint(generation: int) -> None:
        nonlocal saved_gen
        atomic_torch_save(checkpoint_path, {
            "fingerprint": ident, "strategy": strategy.state_dict(), "rows": rows,
            "generation": generation, "elapsed": elapsed,
        })
        saved_gen = generation

    population = es_settings.population
    bar = tqdm(range(start_gen, run.generations), initial=start_gen, total=run.generations,
               desc=f"ES {run.mode} {encoder}", disable=not progress, mininterval=5)
    done_now = 0
    for generation in bar:
        tick = time.perf_counter()
        batch = torch.randperm(len(train_y), generator=generator_from(seed, "batch", generation))
        batch = batch[: run.batch_size]
        images, labels = to_float(train_x[batch]), train_y[batch]
        fitness, accuracy = evaluate_population(
            run.mode, strategy, generation, images, labels, task, run.chunk_size)
        if not torch.isfinite(fitness).all():
            # Name the newest checkpoint actually written, not the last finished generation.
            kept = (f"No checkpoint of this run was written yet ({checkpoint_path})."
                    if saved_gen is None else
                    f"The last good checkpoint ({checkpoint_path}, generation {saved_gen}) "
                    f"is kept.")
            raise ESDivergedError(
                f"generation {generation}: {int((~torch.isfinite(fitness)).sum())} of "
                f"{population} members have non-finite fitness (NaN/inf). {kept} Lower "
                f"es.lr or es.sigma, or add weight decay.")
        sigma, lr = strategy.sigma_at(generation), strategy.lr_at(generation)
        grad = strategy.tell(generation, fitness)
        step_s = time.perf_counter() - tick
        last_gen = generation == run.generations - 1
        test_acc = None
        if (generation + 1) % run.eval_every == 0 or last_gen:
            test_acc = _accuracy(task, layout.unflatten(strategy.theta), test_x, test_y,
                                 run.eval_batch_size, "test-spikes")
        elapsed += time.perf_counter() - tick
        rows.append({
            "generation": generation,
            "fitness_mean": float(fitness.mean()),
            "fitness_max": float(fitness.max()),
            "batch_acc": float(accuracy.mean()),
            "test_acc": test_acc,
            "sigma": sigma,
            "lr": lr,
            "grad_norm": float(grad.norm()),
            "wall_s": round(elapsed, 3),
            "member_evals_per_s": round(population * run.batch_size / step_s, 1),
        })
        bar.set_postfix(fit=f"{rows[-1]['fitness_mean']:.3f}",
                        test=f"{test_acc:.3f}" if test_acc is not None else "-")
        if (generation + 1) % run.checkpoint_every == 0 and not last_gen:
            save_checkpoint(generation)
        done_now += 1
        if stop_after is not None and done_now >= stop_after:
            save_checkpoint(generation)
            break
    bar.close()

    finished = len(rows) == run.generations
    metrics: dict[str, Any] = {"finished": finished, "generations": len(rows)}
    if finished:
        params = layout.unflatten(strategy.theta)
        tested = [r["test_acc"] for r in rows if r["test_acc"] is not None]
        metrics.update({
            "final_test_acc": rows[-1]["test_acc"],
            "best_test_acc": max(tested),
            "final_train_acc": _accuracy(task, params, train_x, train_y, run.eval_batch_size,
                                         "train-spikes"),
            "final_fitness_mean": rows[-1]["fitness_mean"],
            "evaluations": len(rows) * population,
            "member_sample_evaluations": len(rows) * population * run.batch_size,
            "wall_s": round(elapsed, 2),
            "member_evals_per_s": round(
                len(rows) * population * run.batch_size / max(elapsed, 1e-9), 1),
            "num_params": layout.size,
        })
    return metrics, rows, strategy.theta


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def write_run_outputs(metrics, rows, theta, log_csv, metrics_json, params_path,
                      resolved: dict[str, Any]) -> None:
    """Write the per-generation CSV, metrics JSON (with the resolved config) and parameters.

    ``theta`` is the flat vector; ``ParamLayout.of(make_snn(cfg, 0)).unflatten`` names it.
    """
    atomic_write_text(log_csv, rows_to_csv(rows))
    atomic_torch_save(params_path, {"theta": theta})
    atomic_write_json(metrics_json, {**metrics, "config": resolved})
