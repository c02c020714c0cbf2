rule report:
    """The sweep's HTML reports (images embedded) and their figures, from runs.parquet alone."""
    input:
        runs=f"{SWEEP_DIR}/runs.parquet",
        config=f"{SWEEP_DIR}/config.yaml",
    output:
        html=REPORT,
        pages=[f"{SWEEP_DIR}/report/{page}.html" for page in ("length", "tradeoff")],
        figures=[
            report(
                f"{SWEEP_DIR}/report/figures/{spec['name']}.png",
                caption="../report/figure.rst",
                category="Figures",
                labels={"figure": spec.get("title", spec["name"])},
            )
            for spec in config["report"]["figures"]
        ],
    log:
        f"{SWEEP_DIR}/logs/report.log",
    shell:
        "{SSMPIPE:q} report --results={RESULTS:q} -- {config[sweep]:q} 2> {log:q}"
