# flatmin: reproduce "How to Escape Sharp Minima with Random Perturbations" (ICML 2024).
#
#   snakemake --cores all                                   # paper profile -> figures/, tables/
#   snakemake --cores all --configfile config/quick.yaml    # quick profile -> build/quick/
#   snakemake --report report.html                          # HTML report with captions
#
# One rule file per experiment in workflows/; the experiments themselves are
# flatmin.experiments.<name> (compute(config) -> table, plot(table, config) -> figure).


configfile: "config/config.yaml"


report: "workflows/report/workflow.rst"


include: "workflows/common.smk"


rule all:
    default_target: True
    input:
        expand(figure("{name}", "{fmt}"), name=ENABLED, fmt=FIGURE_FORMATS),
        [table(name) for name in TABLE_FILES] if ENABLED else [],


include: "workflows/shard.smk"
include: "workflows/identities.smk"
include: "workflows/decrease.smk"
include: "workflows/complexity.smk"
include: "workflows/trajectories.smk"
include: "workflows/example1.smk"
include: "workflows/escape.smk"
include: "workflows/generalization.smk"
include: "workflows/audit.smk"


# Cheap jobs run on the submitting node under a cluster executor (profiles/slurm).
localrules:
    all,
    audit,
    identities_plot,
    decrease_plot,
    complexity_plot,
    trajectories_plot,
    example1_plot,
    escape_plot,
    generalization_plot,
