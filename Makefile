# Thin wrappers over Snakemake targets. The names match the earlier scripts' Makefile.
SNAKEMAKE ?= uv run snakemake
CORES ?= 1

.PHONY: sync all data subsets test lint fmt dag

sync:  ## install the locked environment
	uv sync --locked

all:  ## the whole pipeline, as configured in config/config.yaml
	$(SNAKEMAKE) --cores $(CORES) all

data:  ## cache every enabled dataset as uint8 tensors
	$(SNAKEMAKE) --cores $(CORES) cache_all

subsets:  ## draw the fixed stratified subsets
	$(SNAKEMAKE) --cores $(CORES) subsets_all

test:
	uv run pytest

lint:
	$(SNAKEMAKE) --lint
	uv run snakefmt --check Snakefile workflow/rules

fmt:
	uv run snakefmt Snakefile workflow/rules

dag:  ## the job graph as an SVG (needs graphviz's `dot`)
	$(SNAKEMAKE) --dag all | dot -Tsvg > dag.svg
