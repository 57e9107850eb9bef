# E3: iteration complexity (Table 1, Theorems 1 and 2): steps to the first (eps, sqrt(eps))-flat
# iterate against eps and d.
# Experiment module: flatmin.experiments.complexity; config section: experiments.complexity.


rule complexity_compute:
    input:
        shards=shard_results("complexity"),
    output:
        csv=result("complexity"),
        sidecar=sidecar(result("complexity")),
    log:
        log_file("complexity_compute"),
    priority: job_runtime("complexity")
    conda:
        CONDA_ENV
    threads: job_threads("complexity")
    resources:
        mem_mb=job_mem_mb("complexity"),
        runtime=job_runtime("complexity"),
    params:
        experiment="complexity",
        section=section("complexity"),
    script:
        "scripts/compute.py"


rule complexity_plot:
    input:
        csv=result("complexity"),
    output:
        pdf=report(
            figure("complexity", "pdf"),
            caption="report/complexity.rst",
            category="Figures",
            labels={"figure": "complexity", "format": "PDF"},
        ),
        png=report(
            figure("complexity", "png"),
            caption="report/complexity.rst",
            category="Figures",
            labels={"figure": "complexity", "format": "PNG"},
        ),
        pdf_sidecar=sidecar(figure("complexity", "pdf")),
        png_sidecar=sidecar(figure("complexity", "png")),
    log:
        log_file("complexity_plot"),
    conda:
        CONDA_ENV
    params:
        experiment="complexity",
        section=section("complexity"),
    script:
        "scripts/plot.py"
