rule data:
    """Generate (or load and check) one data set into the cache, keyed by its own parameters."""
    output:
        f"{RESULTS}/data/{{task}}/{{key}}.npz",
    params:
        spec=lambda wc: json.dumps(DATA_SPECS[wc.key]),
    log:
        f"{RESULTS}/data/{{task}}/{{key}}.log",
    shell:
        "{SSMPIPE:q} data --spec={params.spec:q} -- {output:q} 2> {log:q}"
