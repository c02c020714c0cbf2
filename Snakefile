# ssmpipe: config -> data -> train (one job per shard of sweep points) -> aggregate -> report.
# Run: snakemake --cores 2   (profiles/default supplies --configfile config/config.yaml),
# or snakemake --profile slurm (profiles/slurm: each shard a SLURM job, README).


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"


TUNE_TARGETS = []  # a config with a tune: section adds its study's report (workflow/rules/tune.smk)
if config.get("tune"):

    include: "workflow/rules/tune.smk"


rule all:
    input:
        REPORT,
        TUNE_TARGETS,


onsuccess:
    print(f"ssmpipe: report at {REPORT}")
