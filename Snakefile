# flatmin: reproduce "How to Escape Sharp Minima with Random Perturbations" (ICML 2024).
#
#   snakemake --cores all                                   # paper profile -> figures/, tables/
#   snakemake --cores all --configfile config/quick.yaml    # quick profile -> build/quick/
#   snakemake --report report.html                          # HTML report with captions
#
# One compute and one plot rule for every experiment (workflows/experiments.smk); the experiments
# themselves are the modules of flatmin.experiments, found automatically, and the files named in the
# config's experiment_modules.


configfile: "config/config.yaml"


report: "workflows/report/workflow.rst"


include: "workflows/common.smk"


# The results tables and their sidecars are targets too: Snakemake does not remake a missing input of
# jobs whose outputs are up to date, so a deleted table would otherwise stay deleted.
rule all:
    default_target: True
    input:
        expand(figure("{name}", "{fmt}"), name=ENABLED, fmt=FIGURE_FORMATS),
        [result(name) for name in ENABLED],
        [sidecar(result(name)) for name in ENABLED],
        [table(name) for name in TABLE_FILES] if ENABLED else [],


include: "workflows/shard.smk"
include: "workflows/experiments.smk"
include: "workflows/audit.smk"


# Cheap jobs run on the submitting node under a cluster executor (profiles/slurm).
localrules:
    all,
    audit,
    plot,
