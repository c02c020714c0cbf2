rule data:
    """Generate (or load and check) one data set into the cache, keyed by its own parameters."""
    output:
        f"{RESULTS}/data/{{task}}/{{key}}.npz",
    log:
        f"{RESULTS}/data/{{task}}/{{key}}.log",
    conda:
        ENV
    params:
        ssmpipe=SSMPIPE,
        spec=lambda wc: json.dumps(DATA_SPECS[wc.key]),
    shell:
        "{params.ssmpipe:q} data --spec={params.spec:q} -- {output:q} 2> {log:q}"
