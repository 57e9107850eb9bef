# One compute job and one plot job per enabled experiment, flatmin.experiments.<experiment>
# (config section experiments.<experiment>). A sharded experiment's compute job merges its shard tables
# (workflows/shard.smk).


rule compute:
    input:
        shards=lambda wildcards: shard_results(wildcards.experiment),
    output:
        csv=result("{experiment}"),
        sidecar=sidecar(result("{experiment}")),
    log:
        log_file("{experiment}_compute"),
    wildcard_constraints:
        experiment="|".join(EXPERIMENTS),
    priority: lambda wildcards: job_runtime(wildcards.experiment)
    conda:
        CONDA_ENV
    threads: lambda wildcards: job_threads(wildcards.experiment)
    resources:
        mem_mb=lambda wildcards: job_mem_mb(wildcards.experiment),
        runtime=lambda wildcards: job_runtime(wildcards.experiment),
    params:
        experiment="{experiment}",
        section=lambda wildcards: section(wildcards.experiment),
    script:
        "scripts/compute.py"


rule plot:
    input:
        csv=result("{experiment}"),
    output:
        pdf=report(
            figure("{experiment}", "pdf"),
            caption="report/figure.rst",
            category="Figures",
            labels={"figure": "{experiment}", "format": "PDF"},
        ),
        png=report(
            figure("{experiment}", "png"),
            caption="report/figure.rst",
            category="Figures",
            labels={"figure": "{experiment}", "format": "PNG"},
        ),
        pdf_sidecar=sidecar(figure("{experiment}", "pdf")),
        png_sidecar=sidecar(figure("{experiment}", "png")),
    log:
        log_file("{experiment}_plot"),
    wildcard_constraints:
        experiment="|".join(EXPERIMENTS),
    conda:
        CONDA_ENV
    params:
        experiment="{experiment}",
        section=lambda wildcards: section(wildcards.experiment),
        caption=lambda wildcards: experiment_caption(wildcards.experiment),
    script:
        "scripts/plot.py"
