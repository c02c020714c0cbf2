rule aggregate:
    """One table of a sweep: every (run, epoch) row of its points, from the shards holding them."""
    input:
        manifest=f"{RESULTS}/{{sweep}}/points.json",
        shards=lambda wc: [str(STORE.runs_path(s)) for s in PLANS[wc.sweep].shards],
    output:
        f"{RESULTS}/{{sweep}}/runs.parquet",
    log:
        f"{RESULTS}/{{sweep}}/logs/aggregate.log",
    shell:
        "{SSMPIPE:q} aggregate --results={RESULTS:q} -- {wildcards.sweep:q} 2> {log:q}"
