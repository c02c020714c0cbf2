# The plan job: writes what parse-time planning decided (common.smk): new shard specs, each sweep's
# points.json and config.yaml snapshot; quarantines store files that fail their checks. One job for all
# sweeps, planned one after another as at parse time, so sweeps sharing shards plan them alike.
# It runs only when the store is not as planned (UNWRITTEN): then rule all asks for its marker output
# (PLANNED, common.smk's marker()), and every job reading what it writes (the pending shards' train jobs,
# the sweeps' aggregate and report jobs) runs after it.


rule plan:
    """Write the sweeps' plans into the store (`ssmpipe plan`): specs, manifests, config snapshots."""
    output:
        # update(): Snakemake must not delete them before the job: `ssmpipe plan` quarantines an untrusted
        # spec (kept, named in a warning) and rewrites a manifest only where it changes.
        manifests=[update(str(STORE.manifest_path(name))) for name in SWEEPS],
        snapshots=[update(str(STORE.config_path(name))) for name in SWEEPS],
        specs=[update(str(STORE.spec_path(s))) for s in PENDING],
        changed=[touch(p) for p in PLANNED],
    log:
        f"{RESULTS}/logs/plan.log",
    localrule: True
    conda:
        ENV
    params:
        ssmpipe=SSMPIPE,
        sweeps=[json.dumps(c) for c in SWEEPS.values()],
    shell:
        "{params.ssmpipe:q} plan --json -- {params.sweeps:q} 2> {log:q}"


if UNWRITTEN:
    print(
        f"ssmpipe: the plan job writes the plan first ({UNWRITTEN[0]}"
        + (f", and {len(UNWRITTEN) - 1} more)" if len(UNWRITTEN) > 1 else ")"),
        file=sys.stderr,
    )
