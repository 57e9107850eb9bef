# Escape a sharp global minimizer on real data (the paper's Figure 3 at CPU scale).
# Experiment module: flatmin.experiments.escape; config section: experiments.escape.


rule escape_compute:
    input:
        shards=shard_results("escape"),
    output:
        csv=result("escape"),
        sidecar=sidecar(result("escape")),
    log:
        log_file("escape_compute"),
    priority: job_runtime("escape")
    conda:
        CONDA_ENV
    threads: job_threads("escape")
    resources:
        mem_mb=job_mem_mb("escape"),
        runtime=job_runtime("escape"),
    params:
        experiment="escape",
        section=section("escape"),
    script:
        "scripts/compute.py"


rule escape_plot:
    input:
        csv=result("escape"),
    output:
        pdf=report(
            figure("escape", "pdf"),
            caption="report/escape.rst",
            category="Figures",
            labels={"figure": "escape", "format": "PDF"},
        ),
        png=report(
            figure("escape", "png"),
            caption="report/escape.rst",
            category="Figures",
            labels={"figure": "escape", "format": "PNG"},
        ),
        pdf_sidecar=sidecar(figure("escape", "pdf")),
        png_sidecar=sidecar(figure("escape", "png")),
    log:
        log_file("escape_plot"),
    conda:
        CONDA_ENV
    params:
        experiment="escape",
        section=section("escape"),
    script:
        "scripts/plot.py"
