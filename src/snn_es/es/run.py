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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from snn_es.encoders import augment_images, to_float
from snn_es.es import flip_delta
from snn_es.es.evaluate import PopulationTask, evaluate_population
from snn_es.es.params import ParamLayout
from snn_es.es.readout import READOUT_NAMES, ReadoutES
from snn_es.es.strategy import OpenAIES
from snn_es.errors import UserError
from snn_es.io import (DamagedFileError, atomic_torch_save, atomic_write_bytes, atomic_write_json,
                       atomic_write_text, sha256_bytes, tensors_to_bytes)
from snn_es.job import announce
from snn_es.models import make_snn
from snn_es.seeding import generator_from, seed_from
from snn_es.settings import ESSettings, ExecutionSettings, SNNSettings, canonical

# One row per generation. In the frozen-network control (es.train_hidden false) no full
# generation runs: the fitness is that of the last readout-only step, and batch_acc and
# grad_norm are empty.
LOG_COLUMNS = (
    "generation", "fitness_mean", "fitness_max", "batch_acc", "test_acc", "sigma", "lr",
    "grad_norm", "wall_s", "member_evals_per_s",
)


class ESDivergedError(UserError, RuntimeError):
    """Fitness became NaN or infinite; the last verified checkpoint is kept."""


# A checkpoint is this line, a JSON header line (spec fingerprint, generation, sha256 of the
# payload) and the torch.save payload: a truncated or garbled file fails the checksum
# instead of being resumed.
CHECKPOINT_MAGIC = b"snn-es checkpoint 1\n"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    payload = tensors_to_bytes(state)
    header = {"fingerprint": state["fingerprint"], "generation": state["generation"],
              "payload_sha256": sha256_bytes(payload), "payload_bytes": len(payload)}
    atomic_write_bytes(path, CHECKPOINT_MAGIC + json.dumps(header, sort_keys=True).encode()
                       + b"\n" + payload)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state in a checkpoint written by :func:`save_checkpoint`, after checking its
    header and the sha256 of its payload; a ``DamagedFileError`` if they do not hold."""
    data = Path(path).read_bytes()
    problem = None
    if not data.startswith(CHECKPOINT_MAGIC):
        problem = "it does not start with the snn-es checkpoint header"
    else:
        header_line, _, payload = data[len(CHECKPOINT_MAGIC):].partition(b"\n")
        try:
            header = json.loads(header_line)
        except ValueError:
            header = None
        if not isinstance(header, dict) or not \
                {"fingerprint", "payload_bytes", "payload_sha256"} <= header.keys():
            problem = "its header is unreadable"
        elif len(payload) != header["payload_bytes"] or sha256_bytes(payload) != \
                header["payload_sha256"]:
            problem = (f"its payload ({len(payload)} bytes) does not match the sha256 in its "
                       f"header ({header['payload_bytes']} bytes)")
        else:
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
            if state.get("fingerprint") == header["fingerprint"]:
                return state
            problem = "its header and payload belong to different runs"
    raise DamagedFileError(f"{path} is damaged: {problem}")


def _resume(path: Path, ident: str, generations: int) -> dict[str, Any] | None:
    """The verified state of this run's checkpoint, or None to start at generation 0. A
    damaged checkpoint is moved aside to ``*.corrupt`` (never resumed, never deleted)."""
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path)
    except DamagedFileError as exc:
        aside = path.with_name(path.name + ".corrupt")
        path.replace(aside)
        announce(f"snn-es: {exc}; moved it to {aside} and started this run over from "
                 f"generation 0")
        return None
    if state["fingerprint"] != ident:
        announce(f"snn-es: ignoring {path}: it belongs to different settings; starting "
                 f"from generation 0")
        return None
    announce(f"snn-es: resuming from {path} at generation {state['generation'] + 1} of "
             f"{generations}")
    return state


# Images per forward when measuring accuracy. Part of the results for poisson inputs (their
# spikes are seeded per evaluation batch), so it is a constant, not a setting.
EVAL_BATCH_SIZE = 250


def initial_theta(cfg: SNNSettings, es: ESSettings, seed: int) -> tuple[Tensor, ParamLayout]:
    """The flat starting weights of an ES run (from ``(seed, "init")``, readout scaled by
    ``es.init_readout_scale``, convs by ``es.init_conv_scale``) and their layout."""
    model = make_snn(cfg, seed_from(seed, "init"))
    layout = ParamLayout.of(model)
    with torch.no_grad():
        # A smaller readout starts the membrane logits near zero (cross-entropy ~ ln K).
        model.fc.weight.mul_(es.init_readout_scale)
        model.fc.bias.mul_(es.init_readout_scale)
        # Larger convs make more hidden neurons spike from the start: at the default init
        # only ~2% of the last layer's neurons spike on CIFAR-10, which starves the readout.
        for name, parameter in model.named_parameters():
            if name.startswith("conv"):
                parameter.mul_(es.init_conv_scale)
    return layout.flatten(dict(model.named_parameters())), layout


def _accuracy(task: PopulationTask, params: dict[str, Tensor], images: Tensor, labels: Tensor,
              key: str, batch_size: int = EVAL_BATCH_SIZE) -> float:
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


def es_minibatch(train_images: Tensor, train_labels: Tensor, seed: int, generation: int,
                 batch_size: int, dtype: torch.dtype = torch.float32,
                 augment: str = "none") -> tuple[Tensor, Tensor]:
    """The float images and labels of ES generation ``generation``'s minibatch: the first
    ``batch_size`` of a permutation from ``(seed, "batch", generation)``, augmented
    (``es.augment``) from ``(seed, "augment", generation)``."""
    order = torch.randperm(len(train_labels), generator=generator_from(seed, "batch", generation))
    index = order[:batch_size]
    images = augment_images(to_float(train_images[index]), augment, seed, "augment", generation)
    return images.to(dtype), train_labels[index]


def fingerprint(*parts: Any) -> str:
    return sha256_bytes(json.dumps(parts, sort_keys=True, default=str).encode())


def run_es(
    subset: dict[str, Tensor],
    cfg: SNNSettings,
    es: ESSettings,
    encoder: str,
    seed: int,
    mode: str,
    checkpoint_path: str | Path,
    execution: ExecutionSettings = ExecutionSettings(),
    data_id: str = "",
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], Tensor]:
    """Train the SNN's weights with ES. Returns (metrics, per-generation rows, final theta).

    ``mode`` is the population evaluator (``sequential``, ``chunked`` or ``flip_delta``); ``execution``
    changes only the speed, so a checkpoint written with other execution settings resumes.
    ``stop_after`` ends the loop early after that many generations (simulates a kill; the
    checkpoint written so far is what a later call resumes from).
    """
    checkpoint_path = Path(checkpoint_path)
    if mode == "flip_delta" and not es.rank:
        raise UserError("ES mode flip_delta needs low-rank noise (es.rank > 0): with full-rank "
                        "members there is no shared centre conv to start from; set es.rank: 1 "
                        "or use mode chunked")
    if mode == "flip_delta" and not flip_delta.available():
        raise UserError("ES mode flip_delta needs the flip-delta kernel, which could not be "
                        "built here (see the warning above): install a C++ compiler and "
                        "ninja, or use mode chunked")
    theta, layout = initial_theta(cfg, es, seed)
    # perturb_readout false: the generations' noise is all in the hidden layers, and the
    # readout-only steps alone train the readout
    strategy = OpenAIES(theta, es, seed, shapes=layout.shapes,
                        fixed=None if es.perturb_readout else
                        tuple(name in READOUT_NAMES for name in layout.names))
    task = PopulationTask(cfg, layout, encoder, seed, es.spike_noise, fused=execution.fused,
                          fitness=es.fitness)
    readout = (ReadoutES(cfg, layout, es, seed, encoder, theta, fused=execution.fused,
                         image_chunk=execution.image_chunk) if es.readout_steps else None)
    train_x, train_y = subset["train_images"], subset["train_labels"]
    test_x, test_y = subset["test_images"], subset["test_labels"]
    ident = fingerprint(asdict(cfg), canonical(es), encoder, seed, mode, data_id)

    rows: list[dict[str, Any]] = []
    start_gen, elapsed = 0, 0.0
    # generation of the newest checkpoint of *this* run, verified on load or written here
    saved_gen: int | None = None
    state = _resume(checkpoint_path, ident, es.generations)
    if state is not None:
        strategy.load_state_dict(state["strategy"])
        if readout is not None:
            readout.load_state_dict(state["readout"])
        rows, start_gen, elapsed = state["rows"], state["generation"] + 1, state["elapsed"]
        saved_gen = state["generation"]

    def checkpoint(generation: int) -> None:
        nonlocal saved_gen
        save_checkpoint(checkpoint_path, {
            "fingerprint": ident, "strategy": strategy.state_dict(), "rows": rows,
            "generation": generation, "elapsed": elapsed,
            "readout": readout.state_dict() if readout is not None else None,
        })
        saved_gen = generation

    def check_finite(fitness: Tensor, members: str, generation: int) -> None:
        if torch.isfinite(fitness).all():
            return
        # Name the newest checkpoint actually written, not the last finished generation.
        kept = (f"No checkpoint of this run was written yet ({checkpoint_path})."
                if saved_gen is None else
                f"The last good checkpoint ({checkpoint_path}, generation {saved_gen}, "
                f"checksum verified) is kept.")
        raise ESDivergedError(
            f"generation {generation}: {int((~torch.isfinite(fitness)).sum())} of "
            f"{fitness.numel()} {members} have non-finite fitness (NaN/inf). {kept} Lower "
            f"es.lr or es.sigma (es.readout_lr, es.readout_sigma), or add weight decay.")

    population, generations = es.population, es.generations
    full_evaluations = population * es.batch_size if es.train_hidden else 0  # per generation
    bar = tqdm(range(start_gen, generations), initial=start_gen, total=generations,
               desc=f"ES {mode} {encoder}", disable=not progress, mininterval=5)
    done_now = 0
    for generation in bar:
        tick = time.perf_counter()
        batch_acc = grad_norm = None  # no full generation in the frozen-network control
        if es.train_hidden:
            images, labels = es_minibatch(train_x, train_y, seed, generation, es.batch_size,
                                          augment=es.augment)
            fitness, accuracy = evaluate_population(
                mode, strategy, generation, images, labels, task, execution.chunk_size,
                image_chunk=execution.image_chunk)
            check_finite(fitness, "members", generation)
            batch_acc = float(accuracy.mean())
        sigma, lr = strategy.sigma_at(generation), strategy.lr_at(generation)
        if es.train_hidden:
            grad_norm = float(strategy.tell(generation, fitness).norm())
        if readout is not None:  # then cheap readout-only steps from the updated centre
            readout_fitness = readout.step(strategy.theta, generation, train_x, train_y)
            check_finite(readout_fitness, "readout-only members", generation)
            if not es.train_hidden:
                fitness = readout_fitness
        step_s = time.perf_counter() - tick
        last_gen = generation == generations - 1
        test_acc = None
        if (generation + 1) % es.eval_every == 0 or last_gen:
            test_acc = _accuracy(task, layout.unflatten(strategy.theta), test_x, test_y,
                                 "test-spikes")
        elapsed += time.perf_counter() - tick
        rows.append({
            "generation": generation,
            "fitness_mean": float(fitness.mean()),
            "fitness_max": float(fitness.max()),
            "batch_acc": batch_acc,
            "test_acc": test_acc,
            "sigma": sigma,
            "lr": lr,
            "grad_norm": grad_norm,
            "wall_s": round(elapsed, 3),
            # full member-image evaluations per second of this generation (readout steps
            # included in the time, not in the count)
            "member_evals_per_s": round(full_evaluations / step_s, 1),
        })
        bar.set_postfix(fit=f"{rows[-1]['fitness_mean']:.3f}",
                        test=f"{test_acc:.3f}" if test_acc is not None else "-")
        if (generation + 1) % execution.checkpoint_every == 0 and not last_gen:
            checkpoint(generation)
        done_now += 1
        if stop_after is not None and done_now >= stop_after:
            checkpoint(generation)
            break
    bar.close()

    finished = len(rows) == generations
    metrics: dict[str, Any] = {"finished": finished, "generations": len(rows)}
    if finished:
        params = layout.unflatten(strategy.theta)
        tested = [r["test_acc"] for r in rows if r["test_acc"] is not None]
        metrics.update({
            "final_test_acc": rows[-1]["test_acc"],
            "best_test_acc": max(tested),
            "final_train_acc": _accuracy(task, params, train_x, train_y, "train-spikes"),
            "final_fitness_mean": rows[-1]["fitness_mean"],
            "evaluations": len(rows) * population if es.train_hidden else 0,
            "member_sample_evaluations": len(rows) * full_evaluations,
            "readout_sample_evaluations": len(rows) * (readout.evaluations_per_generation
                                                       if readout is not None else 0),
            "wall_s": round(elapsed, 2),
            "member_evals_per_s": round(len(rows) * full_evaluations / max(elapsed, 1e-9), 1),
            "num_params": layout.size,
        })
    return metrics, rows, strategy.theta


def rows_to_csv(rows: list[dict[str, Any]], columns: tuple[str, ...] = LOG_COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
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
