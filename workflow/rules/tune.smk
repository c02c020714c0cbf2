# A Ray Tune study as one DAG node (the Snakefile includes this only when the config has a
# tune: section): `ssmpipe tune` runs (or resumes) it, here or, with launcher slurm, inside
# one SLURM job. Its trials' rows go to the shared store like any shard's.
from ssmpipe import tune as ssmpipe_tune

STUDY = cfg.study_name(config)
STUDY_REPORT = str(LAYOUT.report_path(STUDY))
# The config the study runs with (<study>/snakemake-config.yaml): only the parts a study reads, rewritten
# (by the study_config job, not at parse time) only when they change: a change of the sweep's grid leaves
# the study alone.
_study_path, _study_text = ssmpipe_tune.study_config(config)
STUDY_CONFIG = str(_study_path)
# Where it is to change, rule all asks for the study_config job's marker (common.smk's marker()).
STUDY_CHANGED = (
    [marker("study-config")]
    if not _study_path.is_file() or _study_path.read_text() != _study_text
    else []
)
TUNE_TARGETS = [STUDY_REPORT, *STUDY_CHANGED]


rule study_config:
    """Write the study's config, only when it changes (`ssmpipe plan --only=study`)."""
    output:
        update(STUDY_CONFIG),  # left alone where unchanged
        [touch(p) for p in STUDY_CHANGED],
    log:
        str(LAYOUT.logs_dir(STUDY) / "study_config.log"),
    localrule: True
    conda:
        ENV
    params:
        ssmpipe=SSMPIPE,
        config=json.dumps(config),
    shell:
        "{params.ssmpipe:q} plan --only=study --json -- {params.config:q} 2> {log:q}"


rule tune:
    """Run (or resume) the study: its trials' rows to the store, its table and study.json."""
    input:
        STUDY_CONFIG,
    output:
        study=str(LAYOUT.study_path(STUDY)),
        runs=str(LAYOUT.table_path(STUDY)),
    log:
        str(LAYOUT.logs_dir(STUDY) / "tune.log"),
    conda:
        ENV
    threads: workflow.cores
    params:
        ssmpipe=SSMPIPE,
        cluster="--cluster=slurm" if config["launcher"] == "slurm" else "",
    shell:
        "{params.ssmpipe:q} tune {params.cluster} --cpus={threads} -- {input:q} > {log:q} 2>&1"


rule tune_report:
    """The study's HTML report: best config, metric against each searched setting, trials' curves."""
    input:
        str(LAYOUT.study_path(STUDY)),
        str(LAYOUT.table_path(STUDY)),
    output:
        html=STUDY_REPORT,
        settings=str(LAYOUT.report_dir(STUDY) / "figures" / "study_settings.png"),
        curves=str(LAYOUT.report_dir(STUDY) / "figures" / "study_curves.png"),
    log:
        str(LAYOUT.logs_dir(STUDY) / "report.log"),
    conda:
        ENV
    params:
        ssmpipe=SSMPIPE,
        results=results_of(3),  # RESULTS
        study=STUDY,
    shell:
        "{params.ssmpipe:q} report --results={params.results:q} -- {params.study:q} 2> {log:q}"
