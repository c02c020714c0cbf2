# launcher slurm (profiles/slurm): the job submits its shard to SLURM through submitit, with the
# requests of its sweep's config snapshot, and waits for it (ssmpipe/slurm.py). SLURM is asked
# first whether it would run such a job, so a request it refuses is an error before any job.
# With slurm.array_size above 1 (the default, 1000), a sweep's pending shards go out as SLURM job
# arrays instead: one train_array job per array (at most array_size tasks, and the cluster's
# MaxArraySize; a task trains one shard, or slurm.shards_per_job at once) submits it and waits for
# all its tasks, one process on this host however many shards it holds; then each shard's
# train_task job (a shell line) passes or fails with its shard's outcome.
ARRAYS = {}  # array key ('<sweep>.<i>') -> its shards
if SLURM_SWEEPS and PENDING:
    from ssmpipe import slurm

    for _name in sorted(SLURM_SWEEPS):
        slurm.check_requests(SWEEPS[_name]["slurm"])
    _arrayed = {
        name: [s for s in PENDING if SWEEP_OF[s] == name]
        for name in sorted(SLURM_SWEEPS)
        if SWEEPS[name]["slurm"]["array_size"] > 1
    }
    if any(_arrayed.values()):
        ARRAYS = slurm.arrays(
            {n: s for n, s in _arrayed.items() if s},
            {n: SWEEPS[n]["slurm"]["array_size"] for n in _arrayed},
            {n: SWEEPS[n]["slurm"]["shards_per_job"] for n in _arrayed},
        )
ARRAY_OF = {s: key for key, shards in ARRAYS.items() for s in shards}
# The train rule's shards (here, or one SLURM job each) and the train_task rule's (in an array); (?!): none.
JOB_SHARD = "|".join(re.escape(s) for s in PENDING if s not in ARRAY_OF) or "(?!)"
TASK_SHARD = "|".join(re.escape(s) for s in ARRAY_OF) or "(?!)"


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
        update(str(LAYOUT.runs_path(f"{{shard,{JOB_SHARD}}}"))),
    log:
        str(TRAIN_LOGS / "{shard}.log"),
    conda:
        train_env
    threads: 1
    resources:
        mem_mb=lambda wc: SHARD_MEM.get(wc.shard, sweep.MEM_FLOOR_MB),  # sized from the shard's settings
    params:
        ssmpipe=SSMPIPE,
        results=results_of(3),  # RESULTS
        launch=launch,
        again=["--again"] if AGAIN else [],
    shell:
        "{params.ssmpipe:q} train --results={params.results:q} --threads={threads} {params.launch:q} "
        "{params.again:q} -- {wildcards.shard:q} 2> {log:q}"


rule train_array:
    """Train an array's shards as one SLURM job array (ssmpipe.slurm.train_array) and wait for all its tasks; its
    output marker says the array is over; each shard's outcome is beside it (<marker>.<shard>.ok or .failed).
    """
    input:
        unpack(array_inputs),
    output:
        marker("array-{array}"),
    log:
        str(TRAIN_LOGS / "array-{array}.log"),
    conda:
        train_env
    threads: 1
    params:
        ssmpipe=SSMPIPE,
        results=RESULTS,
        shards=lambda wc: ARRAYS[wc.array],
        again=["--again"] if AGAIN else [],
    shell:
        "{params.ssmpipe:q} train --results={params.results:q} --slurm={input.slurm:q} --outcome={output:q} "
        "{params.again:q} -- {params.shards:q} 2> {log:q} && touch {output:q}"


rule train_task:
    """One shard of an array: passes once its task stored it, fails with the task's id, state and log if not."""
    input:
        lambda wc: marker(f"array-{ARRAY_OF[wc.shard]}"),
    output:
        update(str(LAYOUT.runs_path(f"{{shard,{TASK_SHARD}}}"))),
    log:
        str(TRAIN_LOGS / "{shard}.log"),
    localrule: True
    conda:
        ENV
    params:
        outcome=lambda wc, input: f"{input[0]}.{wc.shard}",
    shell:
        "cat {params.outcome:q}.* > {log:q} 2>&1; test -e {params.outcome:q}.ok"
