rule aggregate:
    """One table of a sweep: every (run, epoch) row of its points, from the shards holding them."""
    input:
        manifest=str(LAYOUT.manifest_path("{sweep}")),
        shards=lambda wc: SHARD_RUNS[wc.sweep],
    output:
        # update(): Snakemake leaves the previous table in place while the job runs (it would delete it first), so
        # `ssmpipe aggregate` can see it shrink (a seed dropped from the grid): it warns and keeps it beside.
        update(str(LAYOUT.table_path("{sweep}"))),
    log:
        str(LAYOUT.logs_dir("{sweep}") / "aggregate.log"),
    conda:
        ENV
    params:
        ssmpipe=SSMPIPE,
        results=results_of(2),  # RESULTS
    shell:
        "{params.ssmpipe:q} aggregate --results={params.results:q} -- {wildcards.sweep:q} 2> {log:q}"
