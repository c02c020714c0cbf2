rule report:
    """The sweep's HTML report (images embedded) and its figures, from runs.parquet alone."""
    input:
        runs=f"{SWEEP_DIR}/runs.parquet",
        config=f"{SWEEP_DIR}/config.yaml",
    output:
        html=REPORT,
        lengthgen=report(f"{SWEEP_DIR}/report/lengthgen.png", caption="../report/lengthgen.rst", category="Sweep"),
        tradeoff=report(f"{SWEEP_DIR}/report/tradeoff.png", caption="../report/tradeoff.rst", category="Sweep"),
        curves=report(f"{SWEEP_DIR}/report/curves.png", caption="../report/curves.rst", category="Sweep"),
    log:
        f"{SWEEP_DIR}/logs/report.log",
    shell:
        "{SSMPIPE} report --results {RESULTS} {config[sweep]} 2> {log}"
