rule train:
    """Train one shard of sweep points (packed, checkpointed each epoch, resumable)."""
    input:
        spec=f"{RESULTS}/store/specs/{{shard}}.json",
        data=data_inputs,
    output:
        f"{RESULTS}/store/runs/{{shard}}.parquet",
    log:
        f"{RESULTS}/store/logs/{{shard}}.log",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "{SSMPIPE} train --results {RESULTS} --threads {threads} {wildcards.shard} 2> {log}"
