"""Aggregation into tables, plots and the manifest, on small synthetic run outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from snn_es import report


def _write(path: Path, obj) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return str(path)


@pytest.fixture
def fake_results(tmp_path):
    es, cnn, bptt, checks = [], [], [], []
    for encoder, acc in (("poisson", 0.2), ("repeat", 0.3)):
        for mode, wall in (("sequential", 50.0), ("chunked", 20.0)):
            run = tmp_path / f"results/es/cifar10/{encoder}/big/{mode}/seed0"
            log = "generation,fitness_mean,test_acc\n0,-2.3,\n1,-2.2,%s\n" % acc
            _write(run / "log.csv", log)
            es.append(_write(run / "metrics.json", {
                "generations": 2, "evaluations": 64, "final_test_acc": acc,
                "best_test_acc": acc, "final_train_acc": acc + 0.05, "wall_s": wall,
                "member_evals_per_s": 100.0, "config": {}}))
        bptt.append(_write(tmp_path / f"results/baselines/bptt/cifar10/{encoder}/big/metrics.json",
                           {"test_acc": 0.4, "train_acc": 0.5}))
        checks.append(_write(tmp_path / f"results/checks/cifar10/{encoder}.json", {
            "dataset": "cifar10", "encoder": encoder, "loss": 2.3, "logit_std_across_inputs": 0.1,
            "spike_rates": {"lif1": 0.1, "lif2": 0.05, "lif_out": 0.0}}))
    cnn.append(_write(tmp_path / "results/baselines/cnn/cifar10/big/metrics.json",
                      {"test_acc": 0.5, "train_acc": 0.7}))
    return tmp_path, es, cnn, bptt, checks


def test_tables_have_the_published_columns_and_rows(fake_results):
    _, es, cnn, bptt, checks = fake_results
    runs, timing = report.es_tables(es)
    assert list(runs.columns) == report.ES_RUN_COLUMNS and len(runs) == 4
    assert list(timing.columns) == report.ES_TIMING_COLUMNS
    assert "wall_s" not in runs.columns  # accuracy tables carry no timings
    row = runs[(runs.encoder == "repeat") & (runs["mode"] == "chunked")].iloc[0]
    assert row.final_test_acc == 0.3 and row.seed == 0 and row.subset == "big"
    baselines = report.baseline_table(cnn, bptt)
    assert list(baselines.columns) == report.BASELINE_COLUMNS
    assert sorted(baselines.model) == ["cnn", "snn_bptt", "snn_bptt"]
    table = report.checks_table(checks)
    assert {"spike_rate_lif1", "spike_rate_lif_out"} <= set(table.columns) and len(table) == 2


def test_plots_and_csv_are_byte_reproducible(fake_results, tmp_path):
    _, es, cnn, bptt, _ = fake_results
    runs, timing = report.es_tables(es)
    baselines = report.baseline_table(cnn, bptt)
    outputs = []
    for attempt in ("a", "b"):
        folder = tmp_path / attempt
        folder.mkdir()
        report.write_csv(runs, folder / "es_runs.csv")
        report.plot_learning_curves(es, folder / "curves.png")
        report.plot_repeat_control(es, folder / "control.png")
        report.plot_mode_timing(timing, folder / "timing.png")
        report.plot_accuracy_comparison(runs, baselines, folder / "accuracy.png")
        outputs.append({p.name: p.read_bytes() for p in folder.iterdir()})
    assert outputs[0] == outputs[1]
    assert outputs[0]["curves.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert pd.read_csv(tmp_path / "a" / "es_runs.csv").shape == (4, len(report.ES_RUN_COLUMNS))


def test_manifest_lists_hash_size_and_rule(fake_results, tmp_path):
    _, es, cnn, _, _ = fake_results
    entries = [(es[0], "run_es"), (cnn[0], "train_cnn")]
    report.write_manifest(entries, tmp_path / "m1.tsv")
    report.write_manifest(list(reversed(entries)), tmp_path / "m2.tsv")
    assert (tmp_path / "m1.tsv").read_bytes() == (tmp_path / "m2.tsv").read_bytes()
    lines = (tmp_path / "m1.tsv").read_text().splitlines()
    assert lines[0] == "path\tsha256\tbytes\trule" and len(lines) == 3
    path, digest, size, rule = lines[1].split("\t")
    assert len(digest) == 64 and int(size) == Path(path).stat().st_size
    assert rule in ("run_es", "train_cnn")


def _es_metrics(acc: float, es: dict | None = None, **extra) -> dict:
    return {"generations": 2, "evaluations": 8, "member_sample_evaluations": 32,
            "final_test_acc": acc, "best_test_acc": acc + 0.01, "final_train_acc": acc + 0.05,
            "wall_s": 10.0, "member_evals_per_s": 3.2,
            "config": {"dataset": "cifar10", "encoder": "repeat",
                       "es": {"population": 4, "batch_size": 4, "generations": 2,
                              "sigma": 0.02, "lr": 0.005, **(es or {})}}, **extra}


def test_summary_is_the_seed_mean_with_its_spread(tmp_path):
    paths = [_write(tmp_path / f"results/es/cifar10/repeat/big/chunked/seed{seed}/metrics.json",
                    _es_metrics(acc)) for seed, acc in enumerate((0.2, 0.3, 0.4))]
    paths.append(_write(tmp_path / "results/es/cifar10/repeat/big/sequential/seed0/metrics.json",
                        _es_metrics(0.25)))
    runs, _ = report.es_tables(paths)
    summary = report.es_summary(runs)
    assert list(summary.columns) == report.SUMMARY_COLUMNS
    chunked = summary[summary["mode"] == "chunked"].iloc[0]
    assert chunked.seeds == 3 and chunked.member_image_evaluations == 32
    assert chunked.final_test_acc_mean == pytest.approx(0.3)
    assert chunked.final_test_acc_std == pytest.approx(0.1)  # sample std over seeds
    assert (chunked.final_test_acc_min, chunked.final_test_acc_max) == (0.2, 0.4)
    sequential = summary[summary["mode"] == "sequential"].iloc[0]
    assert sequential.seeds == 1 and pd.isna(sequential.final_test_acc_std)
    assert summary["readout_fit_test_acc_mean"].isna().all()  # no reference given


def test_the_readout_fit_reference_is_paired_by_seed(tmp_path):
    folder = "results/es/cifar10/repeat/big/flip_delta/seed{}"
    paths = [_write(tmp_path / folder.format(seed) / "metrics.json", _es_metrics(acc))
             for seed, acc in enumerate((0.30, 0.34))]
    fits = [_write(tmp_path / folder.format(seed) / "readout_fit.json",
                   {"test_acc": acc}) for seed, acc in enumerate((0.36, 0.35))]
    runs, _ = report.es_tables(paths, fits)
    assert runs["readout_fit_test_acc"].tolist() == [0.36, 0.35]
    assert runs["over_readout_fit"].tolist() == pytest.approx([-0.06, -0.01])
    cell = report.es_summary(runs).iloc[0]
    assert cell.readout_fit_test_acc_mean == pytest.approx(0.355)
    assert cell.over_readout_fit_mean == pytest.approx(-0.035)
    assert cell.over_readout_fit_std == pytest.approx(0.05 / 2 ** 0.5)


def test_ablation_rows_are_seed_means_and_paired_differences_from_base(tmp_path):
    accs = {"base": (0.20, 0.30), "lr0.01": (0.25, 0.33), "single": (0.5,)}
    labels = []
    for variant, values in accs.items():
        for seed, acc in enumerate(values):
            path = _write(tmp_path / f"results/ablation/s/{variant}/seed{seed}/metrics.json",
                          _es_metrics(acc))
            labels.append({"metrics": path, "study": "s", "variant": variant, "seed": seed,
                           "changes": {} if variant == "base" else {"es": {"lr": 0.01}}})
    table = report.ablation_table(labels)
    assert list(table.columns) == report.ABLATION_COLUMNS
    assert list(table["variant"]) == ["base", "lr0.01", "single"]
    lr = table[table["variant"] == "lr0.01"].iloc[0]
    assert lr.seeds == 2 and lr.final_test_acc_mean == pytest.approx(0.29)
    # paired by seed: +0.05 and +0.03
    assert lr.delta_vs_base_mean == pytest.approx(0.04)
    assert lr.delta_vs_base_std == pytest.approx(0.0141421, rel=1e-4)
    base = table[table["variant"] == "base"].iloc[0]
    assert base.delta_vs_base_mean == 0.0
    single = table[table["variant"] == "single"].iloc[0]
    assert single.delta_vs_base_mean == pytest.approx(0.3) and pd.isna(single.delta_vs_base_std)
    report.plot_ablation(table, tmp_path / "ablation.png")
    assert (tmp_path / "ablation.png").stat().st_size > 0


def test_scaling_table_checks_each_budget_and_plots_the_references(tmp_path):
    from snn_es.scaling_report import (SCALING_COLUMNS, plot_scaling, reference_lines,
                                       scaling_table)

    paths = []
    for budget, acc, seeds in ((32, 0.15, (0, 1)), (64, 0.2, (0, 1)), (128, 0.25, (0,))):
        for seed in seeds:  # a point with fewer seeds: the plot must still draw
            generations = budget // 16
            metrics = _es_metrics(acc + 0.01 * seed, {"generations": generations})
            metrics["member_sample_evaluations"] = budget
            paths.append(_write(tmp_path / f"results/scaling/cifar10/repeat/p4_b4/e{budget}/"
                                           f"seed{seed}/metrics.json", metrics))
    table = scaling_table(paths)
    assert list(table.columns) == SCALING_COLUMNS and len(table) == 5
    assert list(table["evaluations"]) == [32, 32, 64, 64, 128]
    refs = reference_lines([
        _write(tmp_path / "results/baselines/cnn/cifar10/big/metrics.json", {"test_acc": 0.5}),
        _write(tmp_path / "results/baselines/bptt/cifar10/repeat/big/metrics.json",
               {"test_acc": 0.4})])
    assert refs == {("cifar10", "CNN (backprop)"): 0.5, ("cifar10", "SNN BPTT, repeat"): 0.4}
    plot_scaling(table, refs, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").stat().st_size > 0
    wrong = _es_metrics(0.1)  # ran 32 evaluations, but its folder says 64
    bad = _write(tmp_path / "results/scaling/cifar10/repeat/p4_b4/e64/seed9/metrics.json", wrong)
    with pytest.raises(ValueError, match="ran 32 evaluations, not e64"):
        scaling_table([bad])
