# launcher slurm (profiles/slurm): the job submits its shard to SLURM through submitit, with the
# requests of the sweep's config snapshot, and waits for it (ssmpipe/slurm.py). SLURM is asked
# first whether it would run such a job, so a request it refuses is an error before any job.
LAUNCH = ""
if config["launcher"] == "slurm":
    from ssmpipe import slurm

    if PLAN.pending:
        slurm.check_requests(config["slurm"])
    LAUNCH = f"--slurm {SWEEP_DIR}/config.yaml"


rule train:
    """Train one shard of sweep points (packed, checkpointed each epoch, resumable), here or on SLURM."""
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
    params:
        launch=LAUNCH,
    shell:
        "{SSMPIPE} train --results {RESULTS} --threads {threads} {params.launch} {wildcards.shard} 2> {log}"
