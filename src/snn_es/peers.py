"""The project's SNN trained by an established ES library (EvoTorch's SNES and PGPE), on
exactly the problem a project ES run (``snn_es.es.run.run_es``) solves.

Same as ``run_es``, so that only the strategy differs:

- the subset and the initial weights (``initial_theta(cfg, es, seed)``: ``(seed, "init")``);
- the minibatch of generation g (``(seed, "batch", g)``, the first ``es.batch_size`` of a
  permutation of the training images) and its spikes (``PopulationTask.inputs``:
  ``(seed, "spikes", g[, member])``);
- the fitness (``population_scores`` with ``es.fitness``: minus the cross-entropy by
  default), the population and the number of generations, hence the budget of member-image
  evaluations (generations x population x batch_size);
- the population forward (``population_forward`` on ``MemberParams`` in chunks of
  ``execution.chunk_size`` members and ``execution.image_chunk`` images), so evaluations per
  second compare the strategies, not the forward code;
- the centre's test accuracy every ``es.eval_every`` generations and the final train
  accuracy (``run_es._accuracy``, same spike seeds), and the clock: ``wall_s`` counts the
  generations and the periodic test evaluations, as ``run_es`` does.

EvoTorch samples its population from the problem's own generator, seeded with
``seed_from(seed, "evotorch")``, so a run reproduces bit for bit. EvoTorch is an optional
dependency (``uv sync --group peers``); without it ``run_peer`` raises a ``UserError``.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from snn_es.config import PEER_EVOTORCH as EVOTORCH
from snn_es.config import PEER_IMPLEMENTATIONS as IMPLEMENTATIONS  # noqa: F401 (re-exported)
from snn_es.errors import UserError
from snn_es.es.evaluate import PopulationTask, score_chunk
from snn_es.es.population import MemberParams
from snn_es.es.run import _accuracy, es_minibatch, initial_theta
from snn_es.es.run import rows_to_csv as es_rows_to_csv
from snn_es.seeding import seed_from
from snn_es.settings import ESSettings, ExecutionSettings, SNNSettings

# EvoTorch's settings. SNES: `stdev_init` only, every other argument at EvoTorch's default
# (center_learning_rate 1.0, stdev_learning_rate 0.2 (3 + ln n) / sqrt(n), "nes" ranking).
# 0.02 is the sigma the project's diagnostics favour (issue 14). PGPE: stdev_learning_rate
# 0.1 as in EvoTorch's PGPE example (examples/scripts/rl_clipup.py), the same `stdev_init`.
DEFAULT_EVOTORCH = {
    "snes": {"stdev_init": 0.02},
    # Adam at the project's tuned step: EvoTorch's RL example (ClipUp, centre lr 0.01125,
    # max_speed 0.015) caps a step's L2 norm at 0.015, ~1e-4 per weight of this SNN.
    "pgpe": {"stdev_init": 0.02, "center_learning_rate": 0.005, "stdev_learning_rate": 0.1,
             "optimizer": "adam", "max_speed": 0.015},
}

LOG_COLUMNS = ("generation", "member_sample_evaluations", "fitness_mean", "fitness_max", "batch_acc",
               "test_acc", "stdev_mean", "wall_s", "member_evals_per_s")

MISSING_EVOTORCH = ("EvoTorch is not installed; it is an optional dependency: run "
                    "`./uv sync --group peers` (or `./uv run --group peers snakemake --cores 2 "
                    "peers`)")


def require_evotorch():
    """The ``evotorch`` module, or one clear ``UserError`` naming the fix."""
    try:
        import evotorch
    except ImportError:
        raise UserError(MISSING_EVOTORCH) from None
    return evotorch


class GenerationData:
    """Generation g's minibatch, labels and network inputs, exactly as ``run_es`` draws them."""

    def __init__(self, subset: dict[str, Tensor], task: PopulationTask, batch_size: int,
                 augment: str = "none"):
        self.train_x, self.train_y = subset["train_images"], subset["train_labels"]
        self.task, self.batch_size, self.augment = task, batch_size, augment
        self.generation: int | None = None

    def set(self, generation: int) -> None:
        self.images, self.labels = es_minibatch(self.train_x, self.train_y, self.task.seed,
                                                generation, self.batch_size,
                                                augment=self.augment)
        self.generation = generation
        # Shared spikes (the project's default): drawn once per generation, as run_es does.
        self.shared = None if self.task.per_member_spikes else \
            self.task.inputs(self.images, generation, None)


@torch.no_grad()
def score_members(thetas: Tensor, data: GenerationData, execution: ExecutionSettings
                  ) -> tuple[Tensor, Tensor]:
    """(fitness [P], accuracy [P]) of flat parameter vectors [P, D] on the current generation's
    minibatch, with the chunked evaluator's forward (``evaluate.score_chunk``)."""
    fitness, accuracy = [], []
    for start in range(0, thetas.shape[0], execution.chunk_size):
        stop = min(start + execution.chunk_size, thetas.shape[0])
        members = MemberParams(data.task.layout.unflatten(thetas[start:stop].contiguous()))
        f, a = score_chunk(members, data.images, data.labels, data.task, data.generation,
                           start, data.shared, image_chunk=execution.image_chunk)
        fitness.append(f)
        accuracy.append(a)
    return torch.cat(fitness), torch.cat(accuracy)


def make_problem(data: GenerationData, execution: ExecutionSettings, num_params: int,
                 seed: int):
    """An EvoTorch ``Problem`` (maximise) whose batched evaluation is ``score_members``; its
    generator (EvoTorch's sampling) is seeded by ``(seed, "evotorch")``."""
    evotorch = require_evotorch()

    class SNNProblem(evotorch.Problem):
        def __init__(self):
            super().__init__("max", solution_length=num_params, dtype=torch.float32,
                             device="cpu", seed=seed_from(seed, "evotorch"),
                             store_solution_stats=False)
            self.last_accuracy: Tensor | None = None

        def _evaluate_batch(self, solutions) -> None:
            values = solutions.values.as_subclass(Tensor)  # EvoTorch's read-only view
            fitness, accuracy = score_members(values, data, execution)
            self.last_accuracy = accuracy
            solutions.set_evals(fitness)

    return SNNProblem()


def make_searcher(implementation: str, problem, theta: Tensor, population: int,
                  settings: dict[str, Any]):
    """EvoTorch's SNES or PGPE, centred on ``theta``, with ``settings`` (see DEFAULT_EVOTORCH)."""
    from evotorch.algorithms import PGPE, SNES

    if implementation == "evotorch_snes":
        return SNES(problem, stdev_init=settings["stdev_init"], popsize=population,
                    center_init=theta.clone())
    if implementation == "evotorch_pgpe":
        optimizer_config = None
        if settings["optimizer"] == "clipup" and settings.get("max_speed") is not None:
            optimizer_config = {"max_speed": settings["max_speed"]}
        return PGPE(problem, popsize=population, center_init=theta.clone(),
                    stdev_init=settings["stdev_init"],
                    center_learning_rate=settings["center_learning_rate"],
                    stdev_learning_rate=settings["stdev_learning_rate"],
                    optimizer=settings["optimizer"], optimizer_config=optimizer_config)
    raise ValueError(f"unknown EvoTorch implementation {implementation!r}; valid: "
                     f"{', '.join(EVOTORCH)}")


def run_peer(
    subset: dict[str, Tensor],
    cfg: SNNSettings,
    es: ESSettings,
    encoder: str,
    seed: int,
    implementation: str,
    settings: dict[str, Any] | None = None,
    execution: ExecutionSettings = ExecutionSettings(),
    progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]], Tensor]:
    """Train the SNN with EvoTorch's SNES or PGPE. Returns (metrics, rows, final centre).

    ``es`` supplies the shared problem and budget (population, batch_size, generations,
    eval_every, fitness, init_readout_scale, spike_noise); its strategy settings (sigma, lr,
    ...) belong to the project's ES and are unused here. ``settings``: the EvoTorch settings
    of the implementation (None: ``DEFAULT_EVOTORCH``).
    """
    if implementation not in EVOTORCH:
        raise ValueError(f"run_peer trains {', '.join(EVOTORCH)}; got {implementation!r}")
    require_evotorch()
    settings = {**DEFAULT_EVOTORCH[EVOTORCH[implementation]], **(settings or {})}
    theta, layout = initial_theta(cfg, es, seed)
    task = PopulationTask(cfg, layout, encoder, seed, es.spike_noise, fused=execution.fused,
                          fitness=es.fitness)
    data = GenerationData(subset, task, es.batch_size, es.augment)
    problem = make_problem(data, execution, layout.size, seed)
    searcher = make_searcher(implementation, problem, theta, es.population, settings)
    test_x, test_y = subset["test_images"], subset["test_labels"]
    population, generations = es.population, es.generations

    rows: list[dict[str, Any]] = []
    elapsed = 0.0
    bar = tqdm(range(generations), desc=f"{implementation} {encoder}", disable=not progress,
               mininterval=5)
    for generation in bar:
        tick = time.perf_counter()
        data.set(generation)
        searcher.step()
        fitness = searcher.population.evals[:, 0].as_subclass(Tensor)
        if fitness.shape[0] != population:  # EvoTorch must not resize the population
            raise RuntimeError(f"{implementation} evaluated {fitness.shape[0]} members, "
                               f"not {population}")
        step_s = time.perf_counter() - tick
        centre = searcher.status["center"].as_subclass(Tensor)
        last_gen = generation == generations - 1
        test_acc = None
        if (generation + 1) % es.eval_every == 0 or last_gen:
            test_acc = _accuracy(task, layout.unflatten(centre), test_x, test_y, "test-spikes")
        elapsed += time.perf_counter() - tick
        rows.append({
            "generation": generation,
            "member_sample_evaluations": (generation + 1) * population * es.batch_size,
            "fitness_mean": float(fitness.mean()),
            "fitness_max": float(fitness.max()),
            "batch_acc": float(problem.last_accuracy.mean()),
            "test_acc": test_acc,
            "stdev_mean": float(searcher.status["stdev"].as_subclass(Tensor).mean()),
            "wall_s": round(elapsed, 3),
            "member_evals_per_s": round(population * es.batch_size / step_s, 1),
        })
        bar.set_postfix(fit=f"{rows[-1]['fitness_mean']:.3f}",
                        test=f"{test_acc:.3f}" if test_acc is not None else "-")
        if not torch.isfinite(fitness).all():
            raise UserError(f"{implementation}, generation {generation}: non-finite fitness; "
                            f"lower the EvoTorch stdev_init or learning rates")
    bar.close()

    centre = searcher.status["center"].as_subclass(Tensor).clone()
    tested = [r["test_acc"] for r in rows if r["test_acc"] is not None]
    evaluations = generations * population * es.batch_size
    metrics = {
        "finished": True,
        "generations": generations,
        "implementation": implementation,
        "evotorch_settings": settings,
        "evotorch_version": require_evotorch().__version__,
        "final_test_acc": rows[-1]["test_acc"],
        "best_test_acc": max(tested),
        "final_train_acc": _accuracy(task, layout.unflatten(centre), subset["train_images"],
                                     subset["train_labels"], "train-spikes"),
        "final_fitness_mean": rows[-1]["fitness_mean"],
        "evaluations": generations * population,
        "member_sample_evaluations": evaluations,
        "wall_s": round(elapsed, 2),
        "member_evals_per_s": round(evaluations / max(elapsed, 1e-9), 1),
        "num_params": layout.size,
    }
    return metrics, rows, centre


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    return es_rows_to_csv(rows, LOG_COLUMNS)
