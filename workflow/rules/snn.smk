# Backprop references and checks: the baseline CNN, the SNN forward check, and the SNN
# trained by surrogate-gradient BPTT.


def dataset_snn(wildcards):
    """The canonical `snn` of the dataset (the section with the dataset's overrides)."""
    return snn_settings(config, wildcards.dataset)


def forward_check_subset(wildcards):
    """The forward check reads test images of the subset with the fewest (ties: by name),
    whatever order the config lists the subsets in."""
    sizes = section("subsets")
    smallest = min(sizes, key=lambda name: (sizes[name]["test"], name))
    return rules.materialize_subset.output.tensors.format(
        dataset=wildcards.dataset, subset=smallest
    )


def cnn_targets():
    return expand(rules.train_cnn.output.metrics, dataset=DATASETS, subset=SUBSETS)


def forward_check_targets():
    return expand(
        rules.snn_forward_check.output.report, dataset=DATASETS, encoder=ENCODERS
    )


def bptt_targets():
    return expand(
        rules.train_snn_bptt.output.metrics,
        dataset=DATASETS,
        encoder=ENCODERS,
        subset=SUBSETS,
    )


rule train_cnn:
    input:
        subset=rules.materialize_subset.output.tensors,
        code=library("data", "subsets", "encoders", "settings", "lif", "models", "train"),
    output:
        metrics="results/baselines/cnn/{dataset}/{subset}/metrics.json",
        epochs="results/baselines/cnn/{dataset}/{subset}/epochs.csv",
    log:
        "logs/train_cnn/{dataset}/{subset}.log",
    conda:
        "../../envs/snn-es.yaml"
    params:
        train=section("cnn"),
        seed=config["seed"],
    script:
        "../scripts/train_cnn.py"


rule snn_forward_check:
    input:
        subset=forward_check_subset,
        code=library("data", "subsets", "encoders", "settings", "lif", "models", "checks"),
    output:
        report="results/checks/{dataset}/{encoder}.json",
    log:
        "logs/snn_forward_check/{dataset}/{encoder}.log",
    conda:
        "../../envs/snn-es.yaml"
    params:
        snn=dataset_snn,
        batch_size=section("forward_check")["batch_size"],
        seed=config["seed"],
    script:
        "../scripts/snn_forward_check.py"


rule train_snn_bptt:
    input:
        subset=rules.materialize_subset.output.tensors,
        code=library("data", "subsets", "encoders", "settings", "lif", "models", "train"),
    output:
        metrics="results/baselines/bptt/{dataset}/{encoder}/{subset}/metrics.json",
        epochs="results/baselines/bptt/{dataset}/{encoder}/{subset}/epochs.csv",
    log:
        "logs/train_snn_bptt/{dataset}/{encoder}/{subset}.log",
    conda:
        "../../envs/snn-es.yaml"
    params:
        snn=dataset_snn,
        train=section("bptt"),
        seed=config["seed"],
    script:
        "../scripts/train_snn_bptt.py"


rule cnn_all:
    input:
        cnn_targets(),


rule snn_forward_all:
    input:
        forward_check_targets(),


rule bptt_all:
    input:
        bptt_targets(),
