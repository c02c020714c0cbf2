rule report:
    """A sweep's HTML reports (images embedded) and their figures, from runs.parquet alone."""
    input:
        runs=str(LAYOUT.table_path("{sweep}")),
        config=str(LAYOUT.config_path("{sweep}")),
    output:
        html=str(LAYOUT.report_path("{sweep}")),
        pages=[
            str(LAYOUT.report_dir("{sweep}") / f"{page}.html")
            for page in ("length", "tradeoff")
        ],
        figures=report(
            directory(str(LAYOUT.report_dir("{sweep}") / "figures")),
            patterns=["{figure}.png"],
            caption="../report/figure.rst",
            category="Figures",
            labels={"sweep": "{sweep}", "figure": "{figure}"},
        ),
    log:
        str(LAYOUT.logs_dir("{sweep}") / "report.log"),
    conda:
        ENV
    params:
        ssmpipe=SSMPIPE,
        results=results_of(3),  # RESULTS
    shell:
        "{params.ssmpipe:q} report --results={params.results:q} -- {wildcards.sweep:q} 2> {log:q}"


rule papers:
    """The reproduction page: per paper and claim, the verdict, ssmpipe's numbers and the paper's, from the store."""
    input:
        REPORTS,
    output:
        PAPERS_PAGE,
    log:
        str(LAYOUT.logs_dir("papers") / "papers.log"),
    conda:
        ENV
    params:
        ssmpipe=SSMPIPE,
        results=results_of(2),  # RESULTS
        sweeps=[*SWEEPS, *NEEDS_DATA],  # an experiment that needs data by its config file: the page says so
    shell:
        "{params.ssmpipe:q} papers --results={params.results:q} --out={output:q} -- {params.sweeps:q} 2> {log:q}"
