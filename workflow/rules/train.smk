# launcher slurm (profiles/slurm): the job submits its shard to SLURM through submitit, with the
# requests of its sweep's config snapshot, and waits for it (ssmpipe/slurm.py). SLURM is asked
# first whether it would run such a job, so a request it refuses is an error before any job.
if SLURM_SWEEPS and PENDING:
    from ssmpipe import slurm

    for _name in sorted(SLURM_SWEEPS):
        slurm.check_requests(SWEEPS[_name]["slurm"])


# Train logs: per sweep (two sweeps sharing a shard never share its log); with experiments:, in papers/.
TRAIN_LOGS = LAYOUT.logs_dir("papers" if PAPERS else FIRST["sweep"]) / "train"


rule train:
    """Train one shard of sweep points (packed, checkpointed each epoch, resumable), here or on SLURM."""
    input:
        unpack(train_inputs),  # one input function per job: Snakemake inspects each, per job
    output:
        # update(): Snakemake must never delete a shard's rows before a job (nor after a failed one): another
        # run sharing the store may have just written them; `ssmpipe train` holds the shard's lock and reuses them.
        # Only a pending shard's (PENDING_SHARD): a stored shard's runs file is then a plain input of aggregate,
        # not a train job in the DAG (3,200 of them cost Snakemake ~3 s per run at 100,000 points).
        update(str(LAYOUT.runs_path(f"{{shard,{PENDING_SHARD}}}"))),
    log:
        str(TRAIN_LOGS / "{shard}.log"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc: SHARD_MEM.get(wc.shard, sweep.MEM_FLOOR_MB),  # sized from the shard's settings
    params:
        ssmpipe=SSMPIPE,
        results=results_of(3),  # RESULTS
        launch=launch,
    shell:
        "{params.ssmpipe:q} train --results={params.results:q} --threads={threads} {params.launch:q} "
        "-- {wildcards.shard:q} 2> {log:q}"
