# launcher slurm (profiles/slurm): the job submits its shard to SLURM through submitit, with the
# requests of the sweep's config snapshot, and waits for it (ssmpipe/slurm.py). SLURM is asked
# first whether it would run such a job, so a request it refuses is an error before any job.
LAUNCH = ""
if config["launcher"] == "slurm":
    from ssmpipe import slurm

    if PLAN.pending:
        slurm.check_requests(config["slurm"])
    LAUNCH = f"--slurm={SWEEP_DIR}/config.yaml"  # one word: quoted whole


rule train:
    """Train one shard of sweep points (packed, checkpointed each epoch, resumable), here or on SLURM."""
    input:
        spec=f"{RESULTS}/store/specs/{{shard}}.json",
        data=data_inputs,
    output:
        # update(): Snakemake must never delete a shard's rows before a job (nor after a failed one): another
        # run sharing the store may have just written them; `ssmpipe train` holds the shard's lock and reuses them.
        update(f"{RESULTS}/store/runs/{{shard}}.parquet"),
    log:
        f"{SWEEP_DIR}/logs/train/{{shard}}.log",  # per sweep: two sweeps sharing a shard never share its log
    threads: 1
    resources:
        mem_mb=2000,
    params:
        launch=LAUNCH,
    shell:
        "{SSMPIPE:q} train --results={RESULTS:q} --threads={threads} {params.launch:q} -- {wildcards.shard:q} "
        "2> {log:q}"
