rule aggregate:
    """One table of the sweep: every (run, epoch) row of its points, from the shards holding them."""
    input:
        manifest=f"{SWEEP_DIR}/points.json",
        shards=[str(STORE.runs_path(s)) for s in PLAN.shards],
    output:
        f"{SWEEP_DIR}/runs.parquet",
    log:
        f"{SWEEP_DIR}/logs/aggregate.log",
    shell:
        "{SSMPIPE:q} aggregate --results={RESULTS:q} -- {config[sweep]:q} 2> {log:q}"
