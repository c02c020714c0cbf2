# ssmpipe: config -> data -> train (one job per shard of sweep points) -> aggregate -> report.
# Run: snakemake   (profiles/default supplies --configfile config/config.yaml and 2 cores)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        REPORT,


onsuccess:
    print(f"ssmpipe: report at {REPORT}")
