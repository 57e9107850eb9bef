# E5: Example 1, the minima of f and the minima of the trace are disjoint.
# Experiment module: flatmin.experiments.example1; config section: experiments.example1.


rule example1_compute:
    input:
        shards=shard_results("example1"),
    output:
        csv=result("example1"),
        sidecar=sidecar(result("example1")),
    log:
        log_file("example1_compute"),
    priority: job_runtime("example1")
    conda:
        CONDA_ENV
    threads: job_threads("example1")
    resources:
        mem_mb=job_mem_mb("example1"),
        runtime=job_runtime("example1"),
    params:
        experiment="example1",
        section=section("example1"),
    script:
        "scripts/compute.py"


rule example1_plot:
    input:
        csv=result("example1"),
    output:
        pdf=report(
            figure("example1", "pdf"),
            caption="report/example1.rst",
            category="Figures",
            labels={"figure": "example1", "format": "PDF"},
        ),
        png=report(
            figure("example1", "png"),
            caption="report/example1.rst",
            category="Figures",
            labels={"figure": "example1", "format": "PNG"},
        ),
        pdf_sidecar=sidecar(figure("example1", "pdf")),
        png_sidecar=sidecar(figure("example1", "png")),
    log:
        log_file("example1_plot"),
    conda:
        CONDA_ENV
    params:
        experiment="example1",
        section=section("example1"),
    script:
        "scripts/plot.py"
