rule aggregate:
    """One table of a sweep: every (run, epoch) row of its points, from the shards holding them."""
    input:
        manifest=str(LAYOUT.manifest_path("{sweep}")),
        shards=lambda wc: SHARD_RUNS[wc.sweep],
    output:
        str(LAYOUT.table_path("{sweep}")),
    log:
        str(LAYOUT.logs_dir("{sweep}") / "aggregate.log"),
    conda:
        ENV
    params:
        ssmpipe=SSMPIPE,
        results=results_of(2),  # RESULTS
    shell:
        "{params.ssmpipe:q} aggregate --results={params.results:q} -- {wildcards.sweep:q} 2> {log:q}"
