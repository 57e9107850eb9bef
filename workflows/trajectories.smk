# E4: trajectories of trbar(Phi(x_t)) and the distance to the flattest point for GD, SGD, SAM, RS,
# RS without projection and SA.
# Experiment module: flatmin.experiments.trajectories; config section: experiments.trajectories.


rule trajectories_compute:
    input:
        shards=shard_results("trajectories"),
    output:
        csv=result("trajectories"),
        sidecar=sidecar(result("trajectories")),
    log:
        log_file("trajectories_compute"),
    priority: job_runtime("trajectories")
    conda:
        CONDA_ENV
    threads: job_threads("trajectories")
    resources:
        mem_mb=job_mem_mb("trajectories"),
        runtime=job_runtime("trajectories"),
    params:
        experiment="trajectories",
        section=section("trajectories"),
    script:
        "scripts/compute.py"


rule trajectories_plot:
    input:
        csv=result("trajectories"),
    output:
        pdf=report(
            figure("trajectories", "pdf"),
            caption="report/trajectories.rst",
            category="Figures",
            labels={"figure": "trajectories", "format": "PDF"},
        ),
        png=report(
            figure("trajectories", "png"),
            caption="report/trajectories.rst",
            category="Figures",
            labels={"figure": "trajectories", "format": "PNG"},
        ),
        pdf_sidecar=sidecar(figure("trajectories", "pdf")),
        png_sidecar=sidecar(figure("trajectories", "png")),
    log:
        log_file("trajectories_plot"),
    conda:
        CONDA_ENV
    params:
        experiment="trajectories",
        section=section("trajectories"),
    script:
        "scripts/plot.py"
