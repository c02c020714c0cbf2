# The plan job: writes what parse-time planning decided (common.smk): new shard specs, each sweep's
# points.json; quarantines store files that fail their checks. One job for all sweeps, planned one after
# another as at parse time, so sweeps sharing shards plan them alike. A sweep's config.yaml snapshot is
# the snapshot job's (a new report title or launcher reruns the report, not the table).
# It runs only when the store is not as planned (UNWRITTEN): then rule all asks for its marker output
# (PLANNED, common.smk's marker()), and every job reading what it writes (the pending shards' train jobs,
# the sweeps' aggregate and report jobs) runs after it.


rule plan:
    """Write the sweeps' plans into the store (`ssmpipe plan`): specs, manifests (and config snapshots,
    the same text as rule snapshot's)."""
    output:
        # The manifests only (the shards' train jobs wait for them), not the specs it writes: thousands of
        # outputs of one job cost Snakemake seconds. update(): not deleted before the job, which rewrites
        # a manifest only where it changes.
        manifests=[update(str(LAYOUT.manifest_path(name))) for name in SWEEPS],
        changed=[touch(p) for p in PLANNED],
    log:
        str(LAYOUT.root / "logs" / "plan.log"),
    localrule: True
    conda:
        ENV
    params:
        ssmpipe=SSMPIPE,
        sweeps=[json.dumps(c) for c in SWEEPS.values()],
    shell:
        "{params.ssmpipe:q} plan --json -- {params.sweeps:q} 2> {log:q}"


rule snapshot:
    """Write a sweep's config snapshot, <results>/<sweep>/config.yaml, where it changes."""
    output:
        update(str(LAYOUT.config_path("{sweep}"))),
        # the marker rule all asks for where a snapshot is to change; none else (a marker no run made would be
        # an output without Snakemake metadata, which --report and every run's summary would warn of)
        [touch(marker("snapshot-{sweep}"))] if SNAPSHOTS else [],
    log:
        str(LAYOUT.logs_dir("{sweep}") / "snapshot.log"),
    localrule: True
    conda:
        ENV
    params:
        ssmpipe=SSMPIPE,
        config=lambda wc: json.dumps(SWEEPS[wc.sweep]),
    shell:
        "{params.ssmpipe:q} plan --only=snapshot --json -- {params.config:q} 2> {log:q}"


if UNWRITTEN:
    print(
        f"ssmpipe: the plan job writes the plan first ({UNWRITTEN[0]}"
        + (f", and {len(UNWRITTEN) - 1} more)" if len(UNWRITTEN) > 1 else ")"),
        file=sys.stderr,
    )
