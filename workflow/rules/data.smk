# A data set's cache file, as ssmpipe/layout.py places it: data/<task>/<task>-<rest of its key>.npz.
DATA_FILE = LAYOUT.data_path("{task}-{rest}")


rule data:
    """Generate (or load and check) one data set into the cache, keyed by its own parameters."""
    output:
        str(DATA_FILE),
    log:
        str(DATA_FILE.with_suffix(".log")),
    conda:
        ENV
    params:
        ssmpipe=SSMPIPE,
        spec=lambda wc: json.dumps(DATA_SPECS[f"{wc.task}-{wc.rest}"]),
    shell:
        "{params.ssmpipe:q} data --spec={params.spec:q} -- {output:q} 2> {log:q}"
