rule aggregate:
    """One table of a sweep: every (run, epoch) row of its points, from the shards holding them."""
    input:
        manifest=f"{RESULTS}/{{sweep}}/points.json",
        shards=lambda wc: SHARD_RUNS[wc.sweep],
    output:
        f"{RESULTS}/{{sweep}}/runs.parquet",
    log:
        f"{RESULTS}/{{sweep}}/logs/aggregate.log",
    conda:
        ENV
    params:
        ssmpipe=SSMPIPE,
        results=results_of(2),  # RESULTS
    shell:
        "{params.ssmpipe:q} aggregate --results={params.results:q} -- {wildcards.sweep:q} 2> {log:q}"
