"""The side-by-side's table and plot (rule aggregate_peers): one row per implementation and
seed, and test accuracy against member-image evaluations per implementation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from snn_es.config import PEER_PROJECT_MODES
from snn_es.report import _save, plt

ORDER = ("snn_es", "snn_es_chunked", "evotorch_snes", "evotorch_pgpe")
LABELS = {"snn_es": "snn_es (this project's ES, flip-delta evaluator)",
          "snn_es_chunked": "snn_es, chunked evaluator", "evotorch_snes": "EvoTorch SNES",
          "evotorch_pgpe": "EvoTorch PGPE"}
COLUMNS = ("implementation", "settings", "evaluations", "readout_evaluations", "seed",
           "final_test_acc",
           "best_test_acc", "final_train_acc", "wall_s", "evals_per_s")


def _metrics(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def implementation_of(spec: dict[str, Any]) -> str:
    """A peer run's implementation; an ES run of the grid or a scaling point read as a
    project row has no such key (``config.same_es_run``): its mode says which row."""
    if "implementation" in spec:
        return spec["implementation"]
    return next(impl for impl, mode in PEER_PROJECT_MODES.items() if mode == spec["mode"])


def settings_string(spec: dict[str, Any]) -> str:
    """The strategy's settings in a few words (the budget is in the `evaluations` column)."""
    if "evotorch" not in spec:  # the project's own strategy
        es = spec["es"]
        parts = [f"sigma={es['sigma']:g}"]
        if es.get("sigma_final") is not None:
            parts[0] += f"->{es['sigma_final']:g}"
        if es.get("sigma_lr"):
            parts.append(f"sigma_lr={es['sigma_lr']:g}")
        parts += [f"lr={es['lr']:g}", es["optimizer"], es["lr_schedule"], f"rank={es['rank']}"]
        if es.get("readout_steps"):
            parts.append(f"readout_steps={es['readout_steps']}x{es['readout_population']}"
                         f"x{es['readout_batch_size']} (sigma={es['readout_sigma']:g} "
                         f"lr={es['readout_lr']:g})")
            if not es.get("perturb_readout", True):
                parts.append("hidden-only generations")
        if es.get("noise_scale", "absolute") != "absolute":
            parts.append(f"noise_scale={es['noise_scale']}")
        return " ".join(parts)
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in sorted(spec["evotorch"].items()))


def _order(implementation: str) -> int:
    return ORDER.index(implementation) if implementation in ORDER else len(ORDER)


def peers_table(metrics_paths: Iterable[str]) -> pd.DataFrame:
    """One row per run: implementation, settings, budget (member-image evaluations), seed,
    final / best test accuracy, final train accuracy, wall seconds, evaluations per second."""
    rows = []
    for path in metrics_paths:
        metrics = _metrics(path)
        spec = metrics["config"]
        rows.append({
            "implementation": implementation_of(spec),
            "settings": settings_string(spec),
            "evaluations": metrics["member_sample_evaluations"],
            "readout_evaluations": metrics.get("readout_sample_evaluations", 0),
            "seed": spec["seed"],
            "final_test_acc": metrics["final_test_acc"],
            "best_test_acc": metrics["best_test_acc"],
            "final_train_acc": metrics["final_train_acc"],
            "wall_s": metrics["wall_s"],
            "evals_per_s": metrics["member_evals_per_s"],
        })
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if len(table):
        table = table.assign(_o=table["implementation"].map(_order)).sort_values(
            ["_o", "implementation", "seed"]).drop(columns="_o").reset_index(drop=True)
    return table


def curves(metrics_paths: Iterable[str]) -> dict[str, pd.DataFrame]:
    """implementation -> test accuracy [%] per member-image evaluations (rows) x seed (cols)."""
    per_impl: dict[str, dict[int, pd.Series]] = {}
    for path in metrics_paths:
        metrics = _metrics(path)
        spec = metrics["config"]
        log = pd.read_csv(Path(path).with_name("log.csv")).dropna(subset=["test_acc"])
        budget = spec["es"]["population"] * spec["es"]["batch_size"]
        series = pd.Series(100 * log["test_acc"].to_numpy(),
                           index=(log["generation"].to_numpy() + 1) * budget)
        per_impl.setdefault(implementation_of(spec), {})[spec["seed"]] = series
    return {impl: pd.DataFrame(seeds).sort_index()
            for impl, seeds in sorted(per_impl.items(), key=lambda kv: _order(kv[0]))}


def plot_peers(metrics_paths: Iterable[str], path: str | os.PathLike) -> None:
    """Test accuracy of the centre against member-image evaluations: per implementation the
    seed mean (line) and the min-max band over seeds (shaded)."""
    metrics_paths = list(metrics_paths)
    table = peers_table(metrics_paths)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    for impl, frame in curves(metrics_paths).items():
        rows = table[table["implementation"] == impl]
        label = (f"{LABELS.get(impl, impl)}: final {100 * rows['final_test_acc'].mean():.1f}% "
                 f"(seeds {100 * rows['final_test_acc'].min():.1f}-"
                 f"{100 * rows['final_test_acc'].max():.1f}), "
                 f"{rows['evals_per_s'].mean():,.0f} evals/s")
        line, = ax.plot(frame.index, frame.mean(axis=1), marker="o", markersize=3, label=label)
        ax.fill_between(frame.index, frame.min(axis=1), frame.max(axis=1),
                        color=line.get_color(), alpha=0.2, linewidth=0)
    spec = _metrics(metrics_paths[0])["config"] if metrics_paths else {}
    seeds = table["seed"].nunique() if len(table) else 0
    ax.set_title("ES implementations on the same SNN problem"
                 + (f": {spec['dataset']} {spec['encoder']}, subset '{spec['subset']}', "
                    f"population {spec['es']['population']} x minibatch "
                    f"{spec['es']['batch_size']}, {seeds} seed(s)" if spec else ""),
                 fontsize=9)
    ax.set_xlabel("full member-image evaluations (generations x population x minibatch "
                  "images);\nsnn_es's readout-only steps come on top, their time is in its "
                  "evals/s")
    ax.set_ylabel("test accuracy of the centre (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="line: seed mean; band: min-max over seeds", title_fontsize=7)
    _save(fig, path)
