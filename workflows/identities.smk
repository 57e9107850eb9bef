# E1: estimator identities (NOTES.md §4): the tangential mean of the perturbation v against
# (rho^2/2) dPhi grad trbar (RS) and d times it (SA).
# Experiment module: flatmin.experiments.identities; config section: experiments.identities.


rule identities_compute:
    input:
        shards=shard_results("identities"),
    output:
        csv=result("identities"),
        sidecar=sidecar(result("identities")),
    log:
        log_file("identities_compute"),
    priority: job_runtime("identities")
    conda:
        CONDA_ENV
    threads: job_threads("identities")
    resources:
        mem_mb=job_mem_mb("identities"),
        runtime=job_runtime("identities"),
    params:
        experiment="identities",
        section=section("identities"),
    script:
        "scripts/compute.py"


rule identities_plot:
    input:
        csv=result("identities"),
    output:
        pdf=report(
            figure("identities", "pdf"),
            caption="report/identities.rst",
            category="Figures",
            labels={"figure": "identities", "format": "PDF"},
        ),
        png=report(
            figure("identities", "png"),
            caption="report/identities.rst",
            category="Figures",
            labels={"figure": "identities", "format": "PNG"},
        ),
        pdf_sidecar=sidecar(figure("identities", "pdf")),
        png_sidecar=sidecar(figure("identities", "png")),
    log:
        log_file("identities_plot"),
    conda:
        CONDA_ENV
    params:
        experiment="identities",
        section=section("identities"),
    script:
        "scripts/plot.py"
