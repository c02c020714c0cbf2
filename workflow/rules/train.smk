# launcher slurm (profiles/slurm): the job submits its shard to SLURM through submitit, with the
# requests of its sweep's config snapshot, and waits for it (ssmpipe/slurm.py). SLURM is asked
# first whether it would run such a job, so a request it refuses is an error before any job.
SLURM_SWEEPS = {name for name, c in SWEEPS.items() if c["launcher"] == "slurm"}
if SLURM_SWEEPS and PENDING:
    from ssmpipe import slurm

    for _name in sorted(SLURM_SWEEPS):
        slurm.check_requests(SWEEPS[_name]["slurm"])


def launch(wildcards):
    """--slurm=<the shard's sweep's config snapshot> (one word, quoted whole), or nothing to train here."""
    name = SWEEP_OF.get(wildcards.shard)
    return f"--slurm={RESULTS}/{name}/config.yaml" if name in SLURM_SWEEPS else ""


# Train logs: per sweep (two sweeps sharing a shard never share its log); with experiments:, in papers/.
TRAIN_LOGS = f"{RESULTS}/papers/logs/train" if PAPERS else f"{RESULTS}/{FIRST['sweep']}/logs/train"


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
        f"{TRAIN_LOGS}/{{shard}}.log",
    threads: 1
    resources:
        mem_mb=2000,
    params:
        launch=launch,
    shell:
        "{SSMPIPE:q} train --results={RESULTS:q} --threads={threads} {params.launch:q} -- {wildcards.shard:q} "
        "2> {log:q}"
