# E6: flat minima generalize: recovery error and trbar on the diagonal net and matrix sensing.
# Experiment module: flatmin.experiments.generalization; config section: experiments.generalization.


rule generalization_compute:
    input:
        shards=shard_results("generalization"),
    output:
        csv=result("generalization"),
        sidecar=sidecar(result("generalization")),
    log:
        log_file("generalization_compute"),
    priority: job_runtime("generalization")
    conda:
        CONDA_ENV
    threads: job_threads("generalization")
    resources:
        mem_mb=job_mem_mb("generalization"),
        runtime=job_runtime("generalization"),
    params:
        experiment="generalization",
        section=section("generalization"),
    script:
        "scripts/compute.py"


rule generalization_plot:
    input:
        csv=result("generalization"),
    output:
        pdf=report(
            figure("generalization", "pdf"),
            caption="report/generalization.rst",
            category="Figures",
            labels={"figure": "generalization", "format": "PDF"},
        ),
        png=report(
            figure("generalization", "png"),
            caption="report/generalization.rst",
            category="Figures",
            labels={"figure": "generalization", "format": "PNG"},
        ),
        pdf_sidecar=sidecar(figure("generalization", "pdf")),
        png_sidecar=sidecar(figure("generalization", "png")),
    log:
        log_file("generalization_plot"),
    conda:
        CONDA_ENV
    params:
        experiment="generalization",
        section=section("generalization"),
    script:
        "scripts/plot.py"
