"""Snakemake job: every run's outputs -> results/tables/*.csv and results/plots/*.png."""

from snn_es import report
from snn_es.job import snakemake_job

with snakemake_job(snakemake):
    inp, out = snakemake.input, snakemake.output
    runs, timing = report.es_tables(inp.es, inp.readout_fit)
    baselines = report.baseline_table(inp.cnn, inp.bptt)
    report.write_csv(runs, out.es_runs)
    report.write_csv(report.es_summary(runs), out.es_summary)
    report.write_csv(timing, out.es_timing)
    report.write_csv(baselines, out.baselines)
    report.write_csv(report.checks_table(inp.checks), out.snn_checks)
    report.plot_learning_curves(inp.es, out.learning_curves)
    report.plot_repeat_control(inp.es, out.repeat_control)
    report.plot_mode_timing(timing, out.mode_timing)
    report.plot_accuracy_comparison(runs, baselines, out.accuracy)
    print(runs.to_string())
    print(baselines.to_string())
