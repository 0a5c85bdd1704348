# Backprop references and checks: the baseline CNN, the SNN forward check, and the SNN
# trained by surrogate-gradient BPTT.


include: "snn_helpers.smk"


rule train_cnn:
    input:
        subset=rules.materialize_subset.output.tensors,
        code=script_code("train_cnn.py"),
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
        code=script_code("snn_forward_check.py"),
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
        code=script_code("train_snn_bptt.py"),
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
