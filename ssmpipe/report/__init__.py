"""Reports: a self-contained HTML page (images embedded) built from a sweep's table alone.

Each figure is written as a PNG beside the page (for `snakemake --report`) and
embedded in it, with the table of numbers behind it; the config that made the
sweep closes the page. Nothing here trains: reports rebuild from the store.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import yaml

from ssmpipe.atomic import atomic_path, write_text
from ssmpipe.report import figures
from ssmpipe.store import Store

FIGURES = {  # file stem -> (title, caption, function of (runs, final))
    "lengthgen": ("Length generalization",
                  "Final test accuracy against sequence length L: one panel per imaginary scale, one line "
                  "per real part; shaded: ± one standard deviation over seeds.",
                  lambda runs, final: figures.length_generalization(final)),
    "tradeoff": ("Real × imaginary tradeoff",
                 "Final test accuracy (mean over seeds) over the grid of eigenvalue real part a and "
                 "imaginary scale s, one panel per length.",
                 lambda runs, final: figures.tradeoff_heatmap(final)),
    "curves": ("Training curves", "Test accuracy per epoch (epoch 0: at init), one panel per imaginary scale, one "
               "line per real part, mean over seeds and lengths.",
               lambda runs, final: figures.training_curves(runs)),
}


def build_report(store: Store, sweep: str) -> Path:
    folder = store.sweep_dir(sweep) / "report"
    runs = pd.read_parquet(store.sweep_dir(sweep) / "runs.parquet")
    config = yaml.safe_load(store.config_path(sweep).read_text())
    final = figures.final_epoch(runs)
    sections = [_status_section(final)]
    for stem, (title, caption, make) in FIGURES.items():
        fig, table = make(runs, final)
        png = _png(fig)
        with atomic_path(folder / f"{stem}.png") as tmp:
            tmp.write_bytes(png)
        sections.append(_figure_section(title, caption, png, table))
    page = _PAGE.format(title=html.escape(config["report"]["title"]), sweep=html.escape(sweep),
                        n_runs=final["run_id"].nunique(), n_rows=len(runs), sections="\n".join(sections),
                        config=html.escape(yaml.safe_dump(config, sort_keys=False)))
    write_text(folder / "index.html", page)
    return folder / "index.html"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _table_html(table: pd.DataFrame) -> str:
    return table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="—", border=0, classes="numbers")


def _figure_section(title: str, caption: str, png: bytes, table: pd.DataFrame) -> str:
    img = base64.b64encode(png).decode()
    return (f"<section><h2>{html.escape(title)}</h2><p>{html.escape(caption)}</p>"
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{img}">'
            f"<details open><summary>numbers</summary>{_table_html(table)}</details></section>")


def _status_section(final: pd.DataFrame) -> str:
    counts = final["status"].value_counts().rename_axis("status").reset_index(name="runs")
    failed = final[final["status"] != "ok"][["run_id", "status", "error"]]
    extra = f"<h3>Runs not ok</h3>{_table_html(failed)}" if len(failed) else ""
    return f"<section><h2>Runs</h2>{_table_html(counts)}{extra}</section>"


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
img {{ max-width: 100%; }}
table.numbers {{ border-collapse: collapse; font-size: 0.85em; }}
table.numbers td, table.numbers th {{ padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right; }}
pre {{ background: #f6f6f6; padding: 1em; }}
section {{ margin-bottom: 2.5em; }}
</style></head><body>
<h1>{title}</h1>
<p>Sweep <code>{sweep}</code>: {n_runs} runs, {n_rows} rows (one per run and epoch).</p>
{sections}
<section><h2>Config</h2><pre>{config}</pre></section>
</body></html>
"""
