# Thin wrappers over Snakemake targets. The names match the earlier scripts' Makefile.
SNAKEMAKE ?= ./uv run snakemake
CORES ?= 1

.PHONY: sync all data subsets cnn snn_forward bptt es_subset es_parallel mnist_es \
	es_repeat_small es_repeat_big es_norepeat_big benchmark benchmark_gpu studies scaling peers \
	smoke report test lint fmt dag

sync:  ## install the locked environment
	./uv sync --locked

all:  ## the whole pipeline, as configured in config/config.yaml
	$(SNAKEMAKE) --cores $(CORES) all

data:  ## cache every enabled dataset as uint8 tensors
	$(SNAKEMAKE) --cores $(CORES) cache_all

subsets:  ## draw the fixed stratified subsets
	$(SNAKEMAKE) --cores $(CORES) subsets_all

cnn:  ## baseline CNN per dataset x subset
	$(SNAKEMAKE) --cores $(CORES) cnn_all

snn_forward:  ## SNN forward checks per dataset x encoder
	$(SNAKEMAKE) --cores $(CORES) snn_forward_all

bptt:  ## surrogate-gradient BPTT reference per dataset x encoder x subset
	$(SNAKEMAKE) --cores $(CORES) bptt_all

es_subset:  ## every sequential ES run of the grid
	$(SNAKEMAKE) --cores $(CORES) es_subset

es_parallel:  ## every chunked ES run of the grid
	$(SNAKEMAKE) --cores $(CORES) es_parallel

mnist_es:  ## the MNIST ES sanity run
	$(SNAKEMAKE) --cores $(CORES) mnist_es

es_repeat_small:  ## CIFAR-10 ES with the repeat encoder, small subset
	$(SNAKEMAKE) --cores $(CORES) es_repeat_small

es_repeat_big:  ## CIFAR-10 ES with the repeat encoder, big subset
	$(SNAKEMAKE) --cores $(CORES) es_repeat_big

es_norepeat_big:  ## the poisson control at the big subset
	$(SNAKEMAKE) --cores $(CORES) es_norepeat_big

benchmark:  ## ES throughput side by side -> results/tables/throughput.csv (not in `all`)
	$(SNAKEMAKE) --cores $(CORES) benchmark

benchmark_gpu:  ## the same on a CUDA GPU -> results/tables/throughput_gpu.csv (< 5 min)
	bash scripts/gpu_benchmark.sh

studies:  ## every study: diagnostics, ablation, scaling (not part of `all`; hours on a CPU)
	$(SNAKEMAKE) --cores $(CORES) diagnostics_all ablation_all scaling

scaling:  ## the compute-scaling study -> results/tables/es_scaling.csv
	$(SNAKEMAKE) --cores $(CORES) scaling

peers:  ## side by side with EvoTorch's SNES and PGPE -> results/tables/es_peers.csv
	./uv run --group peers snakemake --cores $(CORES) peers

smoke:  ## every stage, studies included, in a few minutes, under /tmp/snn-es-smoke
	$(SNAKEMAKE) --cores $(CORES) --configfile config/smoke.yaml --directory /tmp/snn-es-smoke all studies

report:  ## HTML report of the tables and plots of `all` (add STUDIES=studies once built)
	$(SNAKEMAKE) --report results/report.html all $(STUDIES)

test:
	./uv run pytest

lint:
	$(SNAKEMAKE) --lint
	./uv run snakefmt --check Snakefile workflow/rules

fmt:
	./uv run snakefmt Snakefile workflow/rules

dag:  ## the job graph as an SVG (needs graphviz's `dot`)
	$(SNAKEMAKE) --dag all | dot -Tsvg > dag.svg
