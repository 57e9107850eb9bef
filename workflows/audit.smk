# The audit: every claim of the experiments (flatmin.claims.collect_claims()) evaluated on the results tables,
# and Table 1 with the measured exponents beside the paper's. Never written by hand.


rule audit:
    input:
        **{name: result(name) for name in ENABLED},
    output:
        audit_md=table("audit.md"),
        audit_csv=report(
            table("audit.csv"),
            caption="report/audit.rst",
            category="Audit",
            labels={"table": "audit"},
        ),
        table1_md=table("table1.md"),
        table1_tex=table("table1.tex"),
        ranking_md=table("ranking.md"),
        summary_html=report(
            table("summary.html"),
            caption="report/summary.rst",
            category="Summary",
            labels={"table": "summary"},
        ),
        sidecars=[sidecar(table(name)) for name in TABLE_FILES],
    log:
        log_file("audit"),
    conda:
        CONDA_ENV
    params:
        experiments=ENABLED,
    script:
        "scripts/audit.py"
