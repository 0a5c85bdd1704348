"""The ES gradient diagnostics table and plot, from the per-job CSVs of ``diagnose_es``."""

from __future__ import annotations

import os
from collections.abc import Iterable

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from snn_es.report import _save  # noqa: E402

KEYS = ["dataset", "encoder", "subset", "point", "rank", "sigma", "population"]


def diagnostics_table(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """All per-job rows, in the per-job column order, sorted by the setting."""
    frames = [pd.read_csv(p) for p in paths]
    if not frames:
        raise ValueError("no diagnostics CSV to aggregate")
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(KEYS).reset_index(drop=True)[list(frames[0].columns)]


def _label(population: int, rank: int, ranks: int) -> str:
    return f"P={population}" + (f", rank {rank}" if ranks > 1 else "")


def plot_diagnostics(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """One row of panels per dataset x encoder (x point): cosine, SNR, signal vs noise."""
    jobs = list(table.groupby(["dataset", "encoder", "point"], sort=True))
    fig, axes = plt.subplots(len(jobs), 3, figsize=(15, 3.6 * len(jobs)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, ((dataset, encoder, point), part) in zip(axes, jobs):
        name = f"{dataset} / {encoder}" + ("" if point == "init" else f" ({point})")
        settings = list(part.groupby(["population", "rank"], sort=True))
        ranks = part["rank"].nunique()
        cos_ax, snr_ax, noise_ax = row
        for i, ((population, rank), line) in enumerate(settings):
            line = line.sort_values("sigma")
            colour = colours[i % len(colours)]
            label = _label(population, rank, ranks)
            cos_ax.errorbar(line["sigma"], line["cosine_bptt_mean"], yerr=line["cosine_bptt_std"],
                            color=colour, marker="o", ms=4, capsize=3, label=f"{label}: ES")
            cos_ax.plot(line["sigma"], line["cosine_linear_mean"], color=colour, linestyle="--",
                        label=f"{label}: ES on linear fitness")
            snr_ax.plot(line["sigma"], line["snr_debiased"], color=colour, marker="o", ms=4,
                        label=label)
        snr_ax.axhline(part["snr_noise_floor"].max(), color="grey", linestyle=":",
                       label="resolution with K estimates (1 std of pure noise)")
        cos_ax.axhline(0, color="grey", linewidth=0.8)
        cos_ax.set_ylabel("cosine(ES estimate, BPTT gradient)")
        cos_ax.set_title(f"{name}: agreement with the surrogate gradient")
        snr_ax.set_ylabel("per-estimate SNR (debiased)")
        snr_ax.set_title(f"{name}: signal-to-noise of one ES estimate")
        # Signal vs noise: per-pair quantities, taken from the largest population.
        largest = part[part["population"] == part["population"].max()]
        for rank, line in largest.groupby("rank", sort=True):
            line = line.sort_values("sigma")
            suffix = f" (rank {rank})" if ranks > 1 else ""
            noise_ax.plot(line["sigma"], line["pair_half_diff_rms"], marker="o", ms=4,
                          color=colours[0], label="antithetic half-difference (RMS)" + suffix)
            noise_ax.plot(line["sigma"], line["pair_half_diff_linear_rms"], linestyle="--",
                          color=colours[0], label="same, if linear with BPTT gradient" + suffix)
            noise_ax.plot(line["sigma"], line["member_fitness_std"], marker="s", ms=4,
                          color=colours[1], label="member fitness std" + suffix)
        first = part.iloc[0]
        noise_ax.axhline(first["fitness_std_minibatch"], color=colours[2], linestyle=":",
                         label="noise: across minibatches")
        if first["fitness_std_spikes"] > 0:
            noise_ax.axhline(first["fitness_std_spikes"], color=colours[3], linestyle=":",
                             label="noise: across spike samples")
        noise_ax.set_yscale("log")
        noise_ax.set_ylabel("fitness (-CE) spread")
        noise_ax.set_title(f"{name}: fitness signal vs noise")
        for ax in row:
            ax.set_xscale("log")
            ax.set_xlabel("perturbation scale sigma")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=6)
    fig.suptitle("ES gradient diagnostics at the ES runs' initial weights", y=1.0)
    fig.tight_layout()
    _save(fig, path)
