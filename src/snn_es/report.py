"""Published results: CSV tables, plots and the content manifest, from the runs' own files.

Accuracy tables hold no timings, so two runs of the same config give byte-identical tables;
timings live in ``es_timing.csv``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from snn_es.io import atomic_write_bytes, atomic_write_text, sha256_file  # noqa: E402
from snn_es.settings import EVALUATORS  # noqa: E402

ES_KEYS = ["dataset", "encoder", "subset", "mode", "seed"]
# member_sample_evaluations: full member-image evaluations (the budget);
# readout_sample_evaluations: readout-only ones on the centre's hidden spikes (es.readout_steps)
# readout_fit_test_acc: the readout-fit reference on the run's frozen initial network
# (snn_es.readout_fit); over_readout_fit: the run's final test accuracy minus it.
ES_RUN_COLUMNS = ES_KEYS + ["generations", "evaluations", "member_sample_evaluations",
                            "readout_sample_evaluations", "final_test_acc", "best_test_acc",
                            "final_train_acc", "readout_fit_test_acc", "over_readout_fit"]
ES_TIMING_COLUMNS = ES_KEYS + ["wall_s", "member_evals_per_s"]
BASELINE_COLUMNS = ["model", "dataset", "encoder", "subset", "test_acc", "train_acc"]
# PNG files carry no software version or date, so equal plots give equal bytes.
PNG_METADATA = {"Software": None}


def _json(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def es_key(path: str | os.PathLike) -> dict[str, Any]:
    """Grid keys from ``results/es/{dataset}/{encoder}/{subset}/{mode}/seed{seed}/...``."""
    parts = Path(path).parts
    dataset, encoder, subset, mode, seed = parts[-6:-1]
    return {"dataset": dataset, "encoder": encoder, "subset": subset, "mode": mode,
            "seed": int(seed.removeprefix("seed"))}


def es_tables(metrics_paths: Iterable[str], fit_paths: Iterable[str] = ()
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(es_runs, es_timing); ``fit_paths``: the runs' ``readout_fit.json`` (same folders)."""
    fits = {Path(p).parent: _json(p)["test_acc"] for p in fit_paths}
    rows = [{**es_key(p), **_json(p), "readout_fit_test_acc": fits.get(Path(p).parent)}
            for p in metrics_paths]
    frame = pd.DataFrame(rows, columns=sorted({c for r in rows for c in r} | set(ES_RUN_COLUMNS)))
    frame["over_readout_fit"] = frame["final_test_acc"] - frame["readout_fit_test_acc"]
    frame = frame.sort_values(ES_KEYS).reset_index(drop=True)
    frame["readout_sample_evaluations"] = frame["readout_sample_evaluations"].fillna(0) \
        .astype(int)  # runs without readout steps
    return frame[ES_RUN_COLUMNS], frame[ES_TIMING_COLUMNS]


SUMMARY_COLUMNS = ["dataset", "encoder", "subset", "mode", "seeds", "member_image_evaluations",
                   "readout_image_evaluations", "final_test_acc_mean", "final_test_acc_std", "final_test_acc_min",
                   "final_test_acc_max", "best_test_acc_mean", "final_train_acc_mean",
                   "readout_fit_test_acc_mean", "over_readout_fit_mean", "over_readout_fit_std"]


def es_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per grid cell (dataset x encoder x subset x mode): the seed mean of the final
    test accuracy with its spread (sample std over seeds; empty with one seed)."""
    groups = runs.groupby(["dataset", "encoder", "subset", "mode"], sort=True)
    rows = []
    for (dataset, encoder, subset, mode), cell in groups:
        final = cell["final_test_acc"]
        rows.append({"dataset": dataset, "encoder": encoder, "subset": subset, "mode": mode,
                     "seeds": len(cell),
                     "member_image_evaluations": int(cell["member_sample_evaluations"].max()),
                     "readout_image_evaluations":
                         int(cell["readout_sample_evaluations"].max()),
                     "final_test_acc_mean": final.mean(),
                     "final_test_acc_std": final.std() if len(cell) > 1 else None,
                     "final_test_acc_min": final.min(), "final_test_acc_max": final.max(),
                     "best_test_acc_mean": cell["best_test_acc"].mean(),
                     "final_train_acc_mean": cell["final_train_acc"].mean(),
                     # ES minus the readout fit on the same frozen network, paired by seed
                     "readout_fit_test_acc_mean": cell["readout_fit_test_acc"].mean(),
                     "over_readout_fit_mean": cell["over_readout_fit"].mean(),
                     "over_readout_fit_std": cell["over_readout_fit"].std()
                     if len(cell) > 1 else None})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def baseline_table(cnn_paths: Iterable[str], bptt_paths: Iterable[str]) -> pd.DataFrame:
    rows = []
    for p in cnn_paths:  # results/baselines/cnn/{dataset}/{subset}/metrics.json
        dataset, subset = Path(p).parts[-3:-1]
        m = _json(p)
        rows.append({"model": "cnn", "dataset": dataset, "encoder": "", "subset": subset,
                     "test_acc": m["test_acc"], "train_acc": m["train_acc"]})
    for p in bptt_paths:  # results/baselines/bptt/{dataset}/{encoder}/{subset}/metrics.json
        dataset, encoder, subset = Path(p).parts[-4:-1]
        m = _json(p)
        rows.append({"model": "snn_bptt", "dataset": dataset, "encoder": encoder,
                     "subset": subset, "test_acc": m["test_acc"], "train_acc": m["train_acc"]})
    frame = pd.DataFrame(rows, columns=BASELINE_COLUMNS)
    return frame.sort_values(["model", "dataset", "encoder", "subset"]).reset_index(drop=True)


def checks_table(check_paths: Iterable[str]) -> pd.DataFrame:
    rows = []
    for p in check_paths:
        m = _json(p)
        row = {"dataset": m["dataset"], "encoder": m["encoder"], "loss": m["loss"],
               "logit_std_across_inputs": m["logit_std_across_inputs"]}
        row.update({f"spike_rate_{k}": v for k, v in m["spike_rates"].items()})
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["dataset", "encoder"]).reset_index(drop=True)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g", lineterminator="\n"))


def _save(fig, path: str | os.PathLike) -> None:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata=PNG_METADATA)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _es_logs(metrics_paths: Iterable[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    return [(es_key(p), pd.read_csv(Path(p).with_name("log.csv"))) for p in metrics_paths]


def plot_learning_curves(metrics_paths: Iterable[str], path: str | os.PathLike) -> None:
    """Test accuracy of the ES centre vs generation; one panel per dataset x subset."""
    logs = _es_logs(metrics_paths)
    panels = sorted({(k["dataset"], k["subset"]) for k, _ in logs})
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.5 * max(1, len(panels)), 3.6),
                             squeeze=False)
    for ax, (dataset, subset) in zip(axes[0], panels):
        for key, log in logs:
            if (key["dataset"], key["subset"]) != (dataset, subset):
                continue
            tested = log.dropna(subset=["test_acc"])
            ax.plot(tested["generation"] + 1, 100 * tested["test_acc"], marker="o", ms=3,
                    linestyle="-" if key["mode"] == "chunked" else "--",
                    label=f"{key['encoder']} ({key['mode']}, seed {key['seed']})")
        ax.set_title(f"{dataset}, subset '{subset}'")
        ax.set_xlabel("ES generation")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("ES learning curves (accuracy of the population centre)")
    _save(fig, path)


def plot_repeat_control(metrics_paths: Iterable[str], path: str | os.PathLike,
                        subset: str = "big") -> None:
    """repeat (analog input) vs poisson (spike input) at one subset: fitness and accuracy."""
    logs = [(k, log) for k, log in _es_logs(metrics_paths)
            if k["subset"] == subset and k["encoder"] in ("repeat", "poisson")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, log in logs:
        label = f"{key['dataset']} {key['encoder']} ({key['mode']})"
        left.plot(log["generation"] + 1, -log["fitness_mean"], label=label)
        tested = log.dropna(subset=["test_acc"])
        right.plot(tested["generation"] + 1, 100 * tested["test_acc"], marker="o", ms=3,
                   label=label)
    left.set_ylabel("population mean cross-entropy (minibatch)")
    right.set_ylabel("test accuracy (%)")
    for ax in (left, right):
        ax.set_xlabel("ES generation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Input encoding control at subset '{subset}': repeat vs poisson")
    _save(fig, path)


def plot_mode_timing(timing: pd.DataFrame, path: str | os.PathLike) -> None:
    """Wall time of each population evaluator (ES mode) for the same runs."""
    frame = timing.copy()
    frame["run"] = frame["dataset"] + "/" + frame["encoder"] + "/" + frame["subset"]
    table = frame.pivot_table(index="run", columns="mode", values="wall_s", aggfunc="mean")
    table = table[[mode for mode in EVALUATORS if mode in table]]  # sequential first
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(table) + 2), 3.8))
    table.plot.bar(ax=ax, rot=30)
    plt.setp(ax.get_xticklabels(), ha="right")
    ax.set_ylabel("wall time of the ES run (s)")
    ax.set_xlabel("dataset / encoder / subset")
    ax.set_title("ES wall time per run, by population evaluator (mean over seeds)\n"
                 "small-subset cells: every evaluator, a short run (mostly kernel compiling)",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_accuracy_comparison(runs: pd.DataFrame, baselines: pd.DataFrame,
                             path: str | os.PathLike) -> None:
    """Final test accuracy of ES (chunked runs' seed mean), surrogate-gradient BPTT and the
    CNN, per dataset."""
    chunked = runs[runs["mode"] == "chunked"] if (runs["mode"] == "chunked").any() else runs
    es = chunked.groupby(["dataset", "encoder", "subset"], as_index=False)["final_test_acc"] \
        .mean()
    es = es.rename(columns={"final_test_acc": "test_acc"}).assign(model="snn_es")
    both = pd.concat([es, baselines[["model", "dataset", "encoder", "subset", "test_acc"]]])
    datasets = sorted(both["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = both[both["dataset"] == dataset].copy()
        part["setting"] = part["encoder"].replace("", "(images)") + " / " + part["subset"]
        table = part.pivot_table(index="setting", columns="model", values="test_acc")
        (100 * table).plot.bar(ax=ax, rot=30)
        plt.setp(ax.get_xticklabels(), ha="right")
        ax.axhline(10, color="grey", linestyle=":", label="chance (10 classes)")
        ax.set_title(f"{dataset}: test accuracy by training method (ES: seed mean)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xlabel("input encoding / subset")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


ABLATION_COLUMNS = ["study", "variant", "changes", "dataset", "encoder", "generations",
                    "population", "batch_size", "member_evaluations", "seeds",
                    "final_test_acc_mean", "final_test_acc_std", "delta_vs_base_mean",
                    "delta_vs_base_std", "best_test_acc_mean", "final_train_acc_mean",
                    "wall_s_mean"]


def ablation_table(labels: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per ablation variant, in the order given (the config's): what changed, the
    budget, the seed mean of the accuracies, and the difference from the study's base run
    (the variant named ``base``, else the first), paired by seed: mean and sample std over
    seeds (empty with one seed). Each label holds a run's ``metrics`` file (its spec,
    ``config``, and results; two studies' runs may share one), study, variant, changes and
    seed."""
    runs = []
    for label in labels:
        m = _json(label["metrics"])
        label = {k: v for k, v in label.items() if k != "metrics"}
        config = m["config"]
        runs.append({**label, "changes": json.dumps(label["changes"], sort_keys=True),
                     "dataset": config["dataset"], "encoder": config["encoder"],
                     "generations": m["generations"],
                     "population": config["es"]["population"],
                     "batch_size": config["es"]["batch_size"],
                     "member_evaluations": m["member_sample_evaluations"],
                     "final_test_acc": m["final_test_acc"], "best_test_acc": m["best_test_acc"],
                     "final_train_acc": m["final_train_acc"], "wall_s": m["wall_s"]})
    frame = pd.DataFrame(runs)
    rows = []
    for study in dict.fromkeys(r["study"] for r in runs):
        part = frame[frame["study"] == study]
        variants = list(dict.fromkeys(part["variant"]))
        base_name = "base" if "base" in variants else variants[0]
        base = part[part["variant"] == base_name].set_index("seed")["final_test_acc"]
        for variant in variants:
            cell = part[part["variant"] == variant]
            first = cell.iloc[0]
            final = cell.set_index("seed")["final_test_acc"]
            delta = (final - base).dropna()

            def std(values):
                return float(values.std()) if len(values) > 1 else None

            rows.append({
                **{k: first[k] for k in ("study", "variant", "changes", "dataset", "encoder",
                                         "generations", "population", "batch_size",
                                         "member_evaluations")},
                "seeds": len(cell), "final_test_acc_mean": float(final.mean()),
                "final_test_acc_std": std(final),
                "delta_vs_base_mean": float(delta.mean()) if len(delta) else None,
                "delta_vs_base_std": std(delta),
                "best_test_acc_mean": float(cell["best_test_acc"].mean()),
                "final_train_acc_mean": float(cell["final_train_acc"].mean()),
                "wall_s_mean": float(cell["wall_s"].mean()),
            })
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def plot_ablation(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Each variant's change in final test accuracy from its study's base, paired by seed
    (bar: mean, error bar: std over seeds), its own seed-mean accuracy written above it;
    one panel per study."""
    studies = list(dict.fromkeys(table["study"]))
    fig, axes = plt.subplots(len(studies) or 1, 1, squeeze=False, layout="constrained",
                             figsize=(max(6, 0.5 * table["study"].value_counts().max() + 2)
                                      if len(table) else 6, 4.4 * max(1, len(studies))))
    for ax, study in zip(axes[:, 0], studies):
        part = table[table["study"] == study]
        delta = 100 * part["delta_vs_base_mean"].astype(float).fillna(0)
        spread = 100 * part["delta_vs_base_std"].astype(float).fillna(0)
        colors = ["tab:green" if d > 0 else "tab:red" for d in delta]
        ax.bar(part["variant"], delta, yerr=spread, capsize=3, color=colors,
               label=f"change from base (mean of {part['seeds'].max()} seeds, paired by "
                     f"seed; bar: std)")
        for x, (d, s, acc) in enumerate(zip(delta, spread, part["final_test_acc_mean"])):
            ax.annotate(f"{100 * acc:.1f}", (x, d + (s if d >= 0 else -s)),
                        textcoords="offset points", xytext=(0, 3 if d >= 0 else -10),
                        ha="center", fontsize=7)
        ax.axhline(0, color="black", linewidth=1)
        base = part[part["variant"] == "base"] if (part["variant"] == "base").any() \
            else part.iloc[:1]
        plt.setp(ax.get_xticklabels(), rotation=40, ha="right")
        ax.set_ylabel("final test accuracy - base (points)")
        ax.set_title(f"ES levers '{study}' ({part['dataset'].iloc[0]}, base "
                     f"{100 * base['final_test_acc_mean'].iloc[0]:.1f}% after "
                     f"{base['member_evaluations'].iloc[0]:,} member-image evaluations; "
                     f"numbers: each variant's test %)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("variant (changes to the study's base run: see es_ablation.csv)")
    _save(fig, path)


def write_manifest(entries: Iterable[tuple[str, str]], path: str | os.PathLike) -> None:
    """``results/manifest.tsv``: path, sha256, size and producing rule of each published file."""
    lines = ["path\tsha256\tbytes\trule"]
    for file, rule in sorted(entries):
        lines.append(f"{file}\t{sha256_file(file)}\t{os.path.getsize(file)}\t{rule}")
    atomic_write_text(path, "\n".join(lines) + "\n")
