# A Ray Tune study as one DAG node (the Snakefile includes this only when the config has a
# tune: section): `ssmpipe tune` runs (or resumes) it, here or, with launcher slurm, inside
# one SLURM job. Its trials' rows go to the shared store like any shard's.
import yaml

from ssmpipe import tune as ssmpipe_tune
from ssmpipe.atomic import write_text
from ssmpipe.store import _plain

STUDY = ssmpipe_tune.study_name(config)
STUDY_DIR = str(STORE.sweep_dir(STUDY))
STUDY_REPORT = f"{STUDY_DIR}/report/index.html"
# The config the study runs with: only the parts a study reads, rewritten only when they change
# (a change of the sweep's grid leaves the study alone).
STUDY_CONFIG = f"{STUDY_DIR}/snakemake-config.yaml"
write_text(STUDY_CONFIG, yaml.safe_dump({k: _plain(config[k]) for k in
                                         ("sweep", "results", "fixed", "tune", "launcher", "slurm", "report")
                                         if k in config}, sort_keys=False), only_if_changed=True)
TUNE_TARGETS = [STUDY_REPORT]


rule tune:
    """Run (or resume) the study: its trials' rows to the store, its table and study.json."""
    input:
        STUDY_CONFIG,
    output:
        study=f"{STUDY_DIR}/study.json",
        runs=f"{STUDY_DIR}/runs.parquet",
    log:
        f"{STUDY_DIR}/logs/tune.log",
    threads: workflow.cores
    params:
        cluster="--cluster=slurm" if config["launcher"] == "slurm" else "",
    shell:
        "{SSMPIPE:q} tune {params.cluster} --cpus={threads} -- {input:q} > {log:q} 2>&1"


rule tune_report:
    """The study's HTML report: best config, metric against each searched setting, trials' curves."""
    input:
        f"{STUDY_DIR}/study.json",
        f"{STUDY_DIR}/runs.parquet",
    output:
        html=STUDY_REPORT,
        settings=f"{STUDY_DIR}/report/figures/study_settings.png",
        curves=f"{STUDY_DIR}/report/figures/study_curves.png",
    log:
        f"{STUDY_DIR}/logs/report.log",
    shell:
        "{SSMPIPE:q} report --results={RESULTS:q} -- {STUDY:q} 2> {log:q}"
