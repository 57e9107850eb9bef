# E2: per-step decrease of trbar(Phi(x_t)) under the theory schedules against eps (Lemmas 2 and 4).
# Experiment module: flatmin.experiments.decrease; config section: experiments.decrease.


rule decrease_compute:
    input:
        shards=shard_results("decrease"),
    output:
        csv=result("decrease"),
        sidecar=sidecar(result("decrease")),
    log:
        log_file("decrease_compute"),
    priority: job_runtime("decrease")
    conda:
        CONDA_ENV
    threads: job_threads("decrease")
    resources:
        mem_mb=job_mem_mb("decrease"),
        runtime=job_runtime("decrease"),
    params:
        experiment="decrease",
        section=section("decrease"),
    script:
        "scripts/compute.py"


rule decrease_plot:
    input:
        csv=result("decrease"),
    output:
        pdf=report(
            figure("decrease", "pdf"),
            caption="report/decrease.rst",
            category="Figures",
            labels={"figure": "decrease", "format": "PDF"},
        ),
        png=report(
            figure("decrease", "png"),
            caption="report/decrease.rst",
            category="Figures",
            labels={"figure": "decrease", "format": "PNG"},
        ),
        pdf_sidecar=sidecar(figure("decrease", "pdf")),
        png_sidecar=sidecar(figure("decrease", "png")),
    log:
        log_file("decrease_plot"),
    conda:
        CONDA_ENV
    params:
        experiment="decrease",
        section=section("decrease"),
    script:
        "scripts/plot.py"
