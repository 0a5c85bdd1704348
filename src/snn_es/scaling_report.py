"""The compute-scaling study's table and plot (rule ``aggregate_scaling``).

Each run's folder is ``results/scaling/{dataset}/{encoder}/{allocation}/e{budget}/seed{seed}``;
its metrics.json holds the accuracies, the wall time and the resolved spec.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from snn_es.report import _json, _save, plt

SCALING_COLUMNS = ["dataset", "encoder", "allocation", "evaluations", "seed", "population",
                   "batch_size", "generations", "sigma", "lr", "readout_steps",
                   "readout_evaluations", "augment", "final_test_acc",
                   "best_test_acc", "final_train_acc", "wall_s", "evals_per_s"]


def scaling_table(metrics_paths: Iterable[str]) -> pd.DataFrame:
    rows = []
    for path in metrics_paths:
        dataset, encoder, allocation, budget, seed = Path(path).parts[-6:-1]
        metrics = _json(path)
        es = metrics["config"]["es"]
        rows.append({
            "dataset": dataset, "encoder": encoder, "allocation": allocation,
            "evaluations": metrics["member_sample_evaluations"],
            "readout_evaluations": metrics.get("readout_sample_evaluations", 0),
            "seed": int(seed.removeprefix("seed")), "population": es["population"],
            "batch_size": es["batch_size"], "generations": es["generations"],
            "sigma": es["sigma"], "lr": es["lr"], "readout_steps": es.get("readout_steps", 0),
            "augment": es.get("augment", "none"),  # left out of a spec at its default
            "final_test_acc": metrics["final_test_acc"],
            "best_test_acc": metrics["best_test_acc"],
            "final_train_acc": metrics["final_train_acc"], "wall_s": metrics["wall_s"],
            "evals_per_s": metrics["member_evals_per_s"],
        })
        if rows[-1]["evaluations"] != int(budget.removeprefix("e")):
            raise ValueError(f"{path}: ran {rows[-1]['evaluations']} evaluations, not {budget}")
    frame = pd.DataFrame(rows, columns=SCALING_COLUMNS)
    return frame.sort_values(["dataset", "encoder", "allocation", "evaluations", "seed"]) \
        .reset_index(drop=True)


def reference_lines(paths: Iterable[str]) -> dict[tuple[str, str], float]:
    """(dataset, label) -> test accuracy of the CNN / BPTT baselines."""
    lines = {}
    for path in paths:
        parts, metrics = Path(path).parts, _json(path)
        if "cnn" in parts:  # results/baselines/cnn/{dataset}/{subset}/metrics.json
            lines[(parts[-3], "CNN (backprop)")] = metrics["test_acc"]
        else:  # results/baselines/bptt/{dataset}/{encoder}/{subset}/metrics.json
            lines[(parts[-4], f"SNN BPTT, {parts[-3]}")] = metrics["test_acc"]
    return lines


def plot_scaling(table: pd.DataFrame, references: dict[tuple[str, str], float],
                 path: str | os.PathLike) -> None:
    """One panel per dataset; per encoder, the best allocation's seed mean at each budget
    (line, with the min-max over seeds as a band) and every allocation's mean (points)."""
    datasets = sorted(table["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 5), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, dataset in zip(axes[0], datasets):
        part = table[table["dataset"] == dataset]
        for i, encoder in enumerate(sorted(part["encoder"].unique())):
            color = colors[i % len(colors)]
            cell = part[part["encoder"] == encoder]
            stats = cell.groupby(["allocation", "evaluations"]).agg(
                mean=("final_test_acc", "mean"), min=("final_test_acc", "min"),
                max=("final_test_acc", "max"), wall=("wall_s", "mean"),
                seeds=("seed", "nunique")).reset_index()
            best = stats.loc[stats.groupby("evaluations")["mean"].idxmax()]
            ax.plot(best["evaluations"], 100 * best["mean"], "-o", color=color,
                    label=f"ES, {encoder} (best allocation; labels: wall minutes per run)")
            for k, (x, y, wall, n) in enumerate(zip(best["evaluations"], best["mean"],
                                                    best["wall"], best["seeds"])):
                wall_text = f"{wall / 60:.0f} min" if wall >= 60 else f"{wall:.0f} s"
                # alternate above / below, so that neighbouring budgets' labels do not collide
                ax.annotate(wall_text + (f", n={n}" if n > 1 else ""),
                            (x, 100 * y), textcoords="offset points",
                            xytext=(0, 6 if k % 2 == 0 else -12), ha="center", fontsize=6,
                            color=color)
            ax.fill_between(best["evaluations"], 100 * best["min"], 100 * best["max"],
                            color=color, alpha=0.2)
            ax.scatter(stats["evaluations"], 100 * stats["mean"], color=color, s=12,
                       alpha=0.5, marker="x")
        for j, ((ref_dataset, label), acc) in enumerate(sorted(references.items())):
            if ref_dataset == dataset:
                ax.axhline(100 * acc, ls="--", lw=1, color=colors[(j + 3) % len(colors)],
                           label=f"{label}: {100 * acc:.1f}%")
        ax.axhline(10, color="grey", lw=0.8, ls=":", label="chance (10%)")
        ax.set_xscale("log")
        steps = sorted(part["readout_steps"].unique())
        ax.set_xlabel("full member-image evaluations (population x minibatch x generations)"
                      + (f"\n+ readout-only steps ({'/'.join(map(str, steps))} per generation, "
                         "counted in the table, not on this axis)" if any(steps) else ""))
        ax.set_ylabel("final test accuracy of the centre (%)")
        seeds = part.groupby(["encoder", "allocation", "evaluations"])["seed"].nunique()
        count = (f"{seeds.min()}" if seeds.min() == seeds.max()
                 else f"{seeds.min()}-{seeds.max()}")
        ax.set_title(f"{dataset}: ES accuracy against compute\n{count} seed(s) per point "
                     f"(n = seeds), band: min-max over seeds;\nx = other allocations "
                     f"of the same budget", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")  # the curves rise to the upper left
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
