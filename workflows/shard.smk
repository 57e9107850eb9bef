# One job per entry of an experiment's `shard_by` list (optional; see config.schema.yaml).
# The experiment's own compute rule then merges the shard tables.


rule compute_shard:
    output:
        csv=f"{RESULTS}/shards/{{experiment}}/{{shard}}.csv",
        sidecar=sidecar(f"{RESULTS}/shards/{{experiment}}/{{shard}}.csv"),
    log:
        log_file("compute_{experiment}_{shard}"),
    wildcard_constraints:
        experiment="|".join(EXPERIMENTS),
        shard=r"\d+",
    conda:
        CONDA_ENV
    threads: lambda wildcards: section(wildcards.experiment).get("threads", 1)
    resources:
        mem_mb=lambda wildcards: job_mem_mb(wildcards.experiment),
        runtime=lambda wildcards: job_runtime(wildcards.experiment),
    params:
        experiment=lambda wildcards: wildcards.experiment,
        section=lambda wildcards: shard_section(wildcards.experiment, wildcards.shard),
    script:
        "scripts/compute.py"
