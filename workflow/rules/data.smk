# Datasets -> cached uint8 tensors -> fixed class-stratified subsets.


include: "data_helpers.smk"


rule cache_dataset:
    input:
        code=script_code("cache_dataset.py"),
    output:
        train="results/data/{dataset}/train.pt",
        test="results/data/{dataset}/test.pt",
        info="results/data/{dataset}/info.json",
    log:
        "logs/cache_dataset/{dataset}.log",
    priority: 1000  # short, and every other job waits for it
    conda:
        "../../envs/snn-es.yaml"
    params:
        spec=dataset_entry,
        mirror=config["data_mirror"],
    script:
        "../scripts/cache_dataset.py"


rule materialize_subset:
    input:
        train=rules.cache_dataset.output.train,
        test=rules.cache_dataset.output.test,
        code=script_code("materialize_subset.py"),
    output:
        tensors="results/subsets/{dataset}/{subset}.pt",
        manifest="results/subsets/{dataset}/{subset}.json",
    log:
        "logs/materialize_subset/{dataset}/{subset}.log",
    priority: 1000
    conda:
        "../../envs/snn-es.yaml"
    params:
        sizes=subset_sizes,
        seed=config["seed"],
    script:
        "../scripts/materialize_subset.py"


set_aside_damaged_data()


rule cache_all:
    input:
        cached_datasets(),


rule subsets_all:
    input:
        materialized_subsets(),
