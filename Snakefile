# ssmpipe: config -> data -> train (one job per shard of sweep points) -> aggregate -> report.
# Run: snakemake --cores 2   (profiles/default supplies --configfile config/config.yaml),
# or snakemake --profile slurm (profiles/slurm: each shard a SLURM job, README).
# Every paper at once: snakemake --configfile config/papers.yaml (one DAG of all experiments, then
# results/papers/index.html, the reproduction page).


include: "workflow/rules/common.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"


# A config with a tune: section adds its study's report (workflow/rules/tune.smk).
TUNE_TARGETS = []
if not PAPERS and config.get("tune"):

    include: "workflow/rules/tune.smk"


rule all:
    input:
        TABLES,
        REPORTS,
        TUNE_TARGETS,
        PLANNED,  # markers: jobs that must write what planning decided (workflow/rules/common.smk)
        SNAPSHOTS,
        [PAPERS_PAGE] if PAPERS else [],


onsuccess:
    drop_markers()  # workflow/rules/common.smk
    print(
        f"ssmpipe: reproduction page at {PAPERS_PAGE}"
        if PAPERS
        else f"ssmpipe: report at {REPORTS[0]}"
    )


onerror:
    drop_markers()
