"""Evaluations per second of the side-by-side's implementations, measured together.

The runs of the `peers` study are timed wherever and whenever each one ran (another job
beside it, another session's machine), so their ``wall_s`` compare accuracy per budget, not
speed. Here every implementation runs a few generations in the same process, one thread
each, in rounds that rotate the order, so all of them see the same machine in the same
state; the median over the rounds is the speed.

Each timed generation is one generation of the real run (``run_es`` / ``peers.run_peer`` on
the study's spec, cut short): the population's forward on its minibatch plus the strategy's
update, and for ``snn_es`` its readout-only steps too. The count is full member-image
evaluations (population x minibatch), as in ``es_peers.csv``. The first generation of every
short run is dropped (setup), and one untimed round first compiles the kernels.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from snn_es.allocator import keep_freed_memory
from snn_es.config import PEER_PROJECT_MODES
from snn_es.es.run import run_es
from snn_es.peers import run_peer
from snn_es.settings import ESSettings, ExecutionSettings, SNNSettings

# The project's strategy without its readout-only steps (the full generations alone), to
# show what the readout steps cost; ES then perturbs the readout in the full generations.
FULL_GENERATIONS_ONLY = "snn_es_full_generations_only"


def cpu_name() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def generation_speeds(implementation: str, subset: dict[str, Tensor], cfg: SNNSettings,
                      es: ESSettings, encoder: str, seed: int, generations: int,
                      evotorch: dict[str, Any] | None, execution: ExecutionSettings,
                      ) -> list[float]:
    """Member-image evaluations per second of each generation after the first, of a run of
    ``implementation`` cut to ``generations`` generations (no test evaluation in between)."""
    short = replace(es, generations=generations, eval_every=generations)
    if implementation in (*PEER_PROJECT_MODES, FULL_GENERATIONS_ONLY):
        if implementation == FULL_GENERATIONS_ONLY:
            short = replace(short, readout_steps=0, perturb_readout=True)
        mode = PEER_PROJECT_MODES.get(implementation, PEER_PROJECT_MODES["snn_es"])
        with tempfile.TemporaryDirectory() as scratch:
            _, rows, _ = run_es(subset, cfg, short, encoder, seed, mode,
                                Path(scratch) / "checkpoint.pt", execution, progress=False)
    else:
        _, rows, _ = run_peer(subset, cfg, short, encoder, seed, implementation, evotorch,
                              execution, progress=False)
    return [float(row["member_evals_per_s"]) for row in rows[1:]]


def measure_speeds(specs: dict[str, dict[str, Any]], subset: dict[str, Tensor],
                   cfg: SNNSettings, execution: ExecutionSettings, generations: int,
                   rounds: int, progress: bool = True) -> pd.DataFrame:
    """One row per implementation (``specs``: implementation -> its peers spec, plus
    ``FULL_GENERATIONS_ONLY`` derived from ``snn_es``): the median, min and max over
    ``rounds`` rounds of ``generations - 1`` timed generations, and the speed relative to
    ``snn_es``."""
    if generations < 2 or rounds < 1:
        raise ValueError(f"peers.speed needs generations >= 2 and rounds >= 1, got "
                         f"{generations} and {rounds}")
    keep_freed_memory()  # every implementation on the allocator ES runs use
    if "snn_es" in specs:
        specs = {**specs, FULL_GENERATIONS_ONLY: specs["snn_es"]}
    names = list(specs)

    def speeds(name: str, count: int) -> list[float]:
        spec = specs[name]
        return generation_speeds(name, subset, cfg, ESSettings(**spec["es"]), spec["encoder"],
                                 spec["seed"], count, spec.get("evotorch"), execution)

    for name in names:  # untimed: compiles the kernels, warms the allocator
        speeds(name, 2)
    timed: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)  # rotate the order: none always runs first or last
        for name in names[shift:] + names[:shift]:
            timed[name] += speeds(name, generations)
            if progress:
                print(f"round {round_ + 1}/{rounds} {name}: "
                      f"{statistics.median(timed[name]):.0f} evaluations/s so far", flush=True)
    reference = statistics.median(timed["snn_es"]) if "snn_es" in timed else None
    rows = []
    for name in names:
        spec, values = specs[name], timed[name]
        median = statistics.median(values)
        rows.append({
            "implementation": name,
            "population": spec["es"]["population"],
            "batch_size": spec["es"]["batch_size"],
            "generations_timed": len(values),
            "evals_per_s_median": round(median, 1),
            "evals_per_s_min": round(min(values), 1),
            "evals_per_s_max": round(max(values), 1),
            "relative_to_snn_es": round(median / reference, 3) if reference else None,
            "threads": torch.get_num_threads(),
            "cpu": cpu_name(),
            "torch": torch.__version__,
        })
    return pd.DataFrame(rows)
