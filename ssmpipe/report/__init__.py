"""Reports: a self-contained HTML page (images embedded) built from a sweep's table alone.

Each figure is written as a PNG beside the page (for `snakemake --report`) and
embedded in it, with the table of numbers behind it; the config that made the
sweep closes the page. A sweep none of whose runs finished ok gets pages (and
figure files) that say so, with the first error. Nothing here trains: reports
rebuild from the store. A missing or unreadable input is an InputError naming it.
"""

from __future__ import annotations

import base64
import html
import io
import re
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from ssmpipe.atomic import atomic_path, write_text
from ssmpipe.columns import STOPPED
from ssmpipe.errors import InputError
from ssmpipe.inputs import load_json, load_yaml, read_file
from ssmpipe.layout import Layout
from ssmpipe.report import figures
from ssmpipe.report import study as study_figures
from ssmpipe.report.claims import CLAIMS
from ssmpipe.report.config_block import config_section
from ssmpipe.report.stats import LEVEL, RESAMPLES


def figures_of(config: dict) -> dict:
    """file stem -> (title, caption, family, function of (runs, final)), from the config's report.figures.

    family: the spec's (length, tradeoff), but a curves figure left in tradeoff (the default) is "training"."""
    out = {}
    for spec in config["report"]["figures"]:
        kind = spec["kind"]
        args = {k: spec[k] for k in ("metric", "x", "group", "panel") if k in spec}
        if kind not in ("heatmap", "lengths"):
            args["logy"] = spec.get("logy", False)

        at = spec.get("at", "final")

        def make(runs, final, kind=kind, args=args, at=at):
            rows = final if at == "final" else runs[runs["epoch"] == {"init": 0, "first": 1}[at]]  # only the one asked
            return figures.KINDS[kind](runs if kind == "curves" else rows, **args)

        caption = (spec.get("caption") or _caption(spec)) + _pooling(spec, config)
        family = spec.get("family", "tradeoff")
        if kind == "curves" and family == "tradeoff":  # the schema's default family: training curves are no tradeoff
            family = "training"
        out[spec["name"]] = (spec.get("title", spec["name"]), caption, family, make)
    return out


def _caption(spec: dict) -> str:
    at = {"final": "Final", "init": "At init: ", "first": "Over the first epoch: "}[spec.get("at", "final")]
    what = {
        "lines": f"{at} {spec['metric']} against {spec.get('x')}",
        "heatmap": f"{at} {spec['metric']} over {spec.get('group')} × {spec.get('x')}",
        "curves": f"{spec['metric']} per epoch (epoch 0: at init)",
        "profile": f"{at} {spec['metric']} against the lag τ",
        "lengths": f"{at} {spec['metric']} over train length seq_len × test length T′",
    }[spec["kind"]]
    parts = [what]
    if spec.get("group") and spec["kind"] != "heatmap":
        parts.append(f"one line per {spec['group']}")
    if spec.get("panel"):
        parts.append(f"one panel per {spec['panel']}")
    same = (
        " Each run is tested at the length it trained at: not train at T, test at T′ (a figure of kind lengths "
        "draws that matrix)."
        if spec["kind"] in ("lines", "heatmap") and figures.LENGTH in (spec.get("x"), spec.get("group"))
        else ""
    )
    return "; ".join(parts) + ". Mean over seeds; diverged and failed runs left out." + same


def _pooling(spec: dict, config: dict) -> str:
    """What a figure averages over besides seeds: every grid setting with several values it does not name (x,
    group, panel; a lengths figure names seq_len), said in its caption, never silently."""
    named = [spec.get(k) for k in ("x", "group", "panel")] + (["seq_len"] if spec["kind"] == "lengths" else [])
    over = figures.pooled(config, named)
    if not over:
        return ""
    return f" Averaged over {figures.pooled_words(over)} (not told apart in this figure)."


PAGES = {  # file -> (title suffix, navigation label, the figure families it holds)
    "index.html": ("", "Everything", ("length", "tradeoff", "training")),
    "length.html": (" — length generalization", "Length generalization", ("length",)),
    "tradeoff.html": (" — tradeoffs", "Tradeoffs", ("tradeoff",)),
}


def build_report(store: Layout, sweep: str) -> Path:
    """index.html (everything), length.html and tradeoff.html (one family of figures each), figures/*.png.

    Figures of kind curves (training curves) not put on the length page show on index.html alone."""
    folder = store.report_dir(sweep)
    runs, config = read_sweep(store, sweep)
    final = figures.final_epoch(runs)
    nothing = nothing_ok(final)  # None when some run finished ok (or, in a study, was stopped early)
    head = [_status_section(final, config, runs)]
    study_json = store.study_path(sweep)
    study = None
    if study_json.is_file():  # a tune study (ssmpipe/tune): its best config and trials, not a grid's figures
        study = _read(study_json, lambda p: load_json(read_file(p), str(p)), "a study summary (JSON)")
        # counts by status, best config, every trial (stopped ones are not "not ok")
        head = [_study_best_section(study)]
        keys = [k for k in study["space"] if k in final]
        trials = runs_section(final, _study_objective(config, study), keys, runs)
        head.append(f'<section id="runs"><h2>Trials</h2>{trials}</section>')
        specs = {
            stem: (title, caption, family, lambda runs, final, make=make: make(runs, study))
            for stem, (title, caption, family, make) in STUDY_FIGURES.items()
        }
    else:
        head += (
            [] if nothing else [_claim_section(name, CLAIMS[name](runs, final)) for name in config["report"]["claims"]]
        )
        specs = figures_of(config)
    by_family: dict[str, list[str]] = {"length": [], "tradeoff": [], "training": []}
    if nothing:  # no figure to draw: each page says why, each figure file (a rule's output) shows the same line
        head.insert(0, f'<section id="nothing"><h2>No results</h2><p><b>{html.escape(nothing)}</b></p></section>')
        specs = {
            stem: (title, caption, "none", lambda runs, final: (_note(nothing), None))
            for stem, (title, caption, _, _) in specs.items()
        }
    for stem, (title, caption, family, make) in specs.items():
        fig, table = make(runs, final)
        png = _png(fig)
        with atomic_path(folder / "figures" / f"{stem}.png") as tmp:
            tmp.write_bytes(png)
        if family in by_family:
            by_family[family].append(_figure_section(stem, title, caption, png, table))
    header = _header(config, sweep, study, final, runs)
    config_block = config_section(config)
    for name, (suffix, _, families) in PAGES.items():
        sections = ([*head] if name == "index.html" else []) + [s for f in families for s in by_family[f]]
        body = "\n".join(sections) or f"<p>{html.escape(nothing or 'No figures of this family in this sweep.')}</p>"
        page = _PAGE.format(
            title=html.escape(config["report"]["title"] + suffix),
            style=STYLE,
            header=header,
            nav=_nav(name, {p: sum(len(by_family[f]) for f in fs) for p, (_, _, fs) in PAGES.items()}),
            contents=_contents(sections),
            sections=body,
            config=config_block,
            script=SCRIPT,
        )
        write_text(folder / name, page)
    return folder / "index.html"


def _header(config: dict, sweep: str, study: dict | None, final: pd.DataFrame, runs: pd.DataFrame) -> str:
    """One line under the title: the sweep (or study), its runs by status, its table's rows."""
    counts = final["status"].value_counts()
    statuses = ", ".join(f"{n} {s}" for s, n in counts.items())
    what = (
        f"Study <code>{html.escape(sweep)}</code> ({study['n_trials']} trials"
        if study
        else f"Sweep <code>{html.escape(sweep)}</code> ({final['run_id'].nunique()} runs"
    )
    return f"{what}: {html.escape(statuses) or 'none'}); {len(runs)} rows in its table, one per run and epoch."


def _nav(current: str, figures_on: dict[str, int]) -> str:
    """A tab per page that has figures (and the current one), with how many; the current one marked."""
    links = []
    for name, (_, label, _) in PAGES.items():
        if not figures_on[name] and name != current:
            continue
        count = f" <small>({figures_on[name]} figure{'s' * (figures_on[name] != 1)})</small>"
        here = ' aria-current="page"' if name == current else ""
        links.append(f'<a href="{name}"{here}>{label}{count}</a>')
    return f"<nav>{''.join(links)}</nav>"


def _contents(sections: list[str]) -> str:
    """'On this page': a link to each section's heading (its id)."""
    items = [(m.group(1), html.unescape(m.group(2))) for m in map(_HEADING.search, sections) if m]
    if len(items) < 3:
        return ""
    links = " · ".join(f'<a href="#{i}">{html.escape(text)}</a>' for i, text in items)
    return f'<p class="contents">On this page: {links}</p>'


_HEADING = re.compile(r'<section id="([^"]+)"><h2>(.*?)</h2>')


def read_sweep(store: Layout, sweep: str) -> tuple[pd.DataFrame, dict]:
    """The sweep's table (one row per run and epoch) and its config snapshot; an InputError names a bad file."""
    runs = _read(store.table_path(sweep), _read_table, "a Parquet table")
    missing = sorted({"run_id", "epoch", "status", "error", "train_loss", "test_loss"} - set(runs.columns))
    if missing:
        raise InputError(f"{str(store.table_path(sweep))!r} is not a sweep's table (no column {', '.join(missing)})")
    return runs, read_config(store.config_path(sweep))


def _read_table(path: Path) -> pd.DataFrame:
    """pd.read_parquet without its consolidating copy (one block per column: ~3x faster at 500,000 rows)."""
    return pq.read_table(path).to_pandas(split_blocks=True, self_destruct=True)


def read_config(path: Path) -> dict:
    """A sweep config with a report: section (a snapshot, or an experiment's file); an InputError names a bad one."""
    config = _read(path, lambda p: load_yaml(read_file(p).decode("utf-8"), str(p)), "a YAML config")
    if not isinstance(config, dict) or "report" not in config:
        raise InputError(f"{str(path)!r} is not a checked sweep config (it has no report:)")
    return config


def _read(path: Path, read, what: str):
    """read(path), or an InputError naming the file: missing, or not `what`."""
    if not path.is_file():
        raise InputError(
            f"{str(path)!r} does not exist"
            + (" (`ssmpipe aggregate` writes it)" if path.name == "runs.parquet" else "")
        )
    try:
        return read(path)
    except (OSError, ValueError, yaml.YAMLError) as e:  # ValueError: pyarrow's ArrowInvalid, JSON's, UTF-8's
        raise InputError(f"{str(path)!r} is not {what} ({type(e).__name__}: {str(e)[:200]})") from None


def nothing_ok(final: pd.DataFrame) -> str | None:
    """'all N runs failed: <first error>' when no run finished ok (nor was stopped early by a study), else None."""
    if final["status"].isin(("ok", STOPPED)).any():
        return None
    if final.empty:
        return "The table holds no runs: nothing to show."
    counts = final["status"].value_counts().sort_index()
    text = f"All {len(final)} runs {' or '.join(counts.index)}"
    if len(counts) > 1:
        text += f" ({', '.join(f'{n} {status}' for status, n in counts.items())})"
    errors = final.loc[final["status"] == "failed", "error"].dropna()
    if len(errors):
        return f"{text}; first error: {' '.join(errors.iloc[0].split())[:300]}"
    diverged = " A diverged run's loss turned NaN or infinite." if "diverged" in counts else ""
    return f"{text}: nothing to plot.{diverged}"


def _note(text: str):
    """A figure that holds one line of text (the figure file of a sweep with nothing to plot)."""
    fig = plt.figure(figsize=(6, 1.2))
    fig.text(0.5, 0.5, "\n".join(textwrap.wrap(text, 80)), ha="center", va="center", fontsize=9)
    return fig


def verdict_html(verdict: str) -> str:
    """The verdict word in bold: green supported, red not supported, amber inconclusive, grey anything else."""
    colour = {
        "supported": "#1a7f37",
        "passed": "#1a7f37",
        "not supported": "#b42318",
        "failed": "#b42318",
        "inconclusive": "#9a6700",
    }.get(verdict, "#666")
    return f'<b style="color:{colour}">{html.escape(verdict)}</b>'


def tests_html(v) -> str:
    """A verdict's statistical tests, one line each: the effect, its interval, p, what passing needs, the paper's
    value; then the null they reject (or, undecided, why)."""
    if not v.tests:
        return f"<p>{html.escape(v.finding)}</p>"
    rows = "".join(
        f"<tr><td>{html.escape(t.effect)}</td><td>{_num(t.estimate)}</td>"
        f"<td>{'—' if t.low != t.low else f'[{t.low:.3g}, {t.high:.3g}]'}</td>"
        f"<td>{'—' if t.p != t.p else f'{t.p:.3g}'}</td><td>{html.escape(t.wants)}</td>"
        f"<td>{html.escape(t.paper)}</td><td>{verdict_html('passed' if t.passed else 'failed')}</td></tr>"
        for t in v.tests
    )
    return (
        f'<table class="tests"><tr><th>effect</th><th>estimate</th><th>{100 * (1 - 2 * LEVEL):.0f}% interval</th>'
        f"<th>p</th><th>passing needs</th><th>paper</th><th></th></tr>{rows}</table>"
        f'<p class="null"><b>Null:</b> {html.escape(v.null)}. Level {LEVEL:g}; resampling over runs '
        f"({RESAMPLES} permutations or bootstrap draws).{(' ' + html.escape(v.note) + '.') if v.note else ''}</p>"
    )


def _num(x: float) -> str:
    return "—" if x != x else f"{x:.3g}"


def _claim_section(name: str, v) -> str:
    body = tests_html(v) if v.tests else f"<p>{html.escape(v.finding)}</p>"
    return (
        f'<section id="claim-{name}"><h2>Paper {html.escape(v.paper)}: {html.escape(v.claim)}</h2>'
        f"<p>{verdict_html(v.verdict)}</p>{body}"
        f"{numbers(v.table, 'The numbers behind the verdict')}</section>"
    )


STUDY_FIGURES = {  # a tune study's: file stem -> (title, caption, family, function of (runs, study.json))
    "study_settings": (
        "Metric against each searched setting",
        (
            "Each trial's metric at its last epoch against its sampled value of each searched setting; "
            "hollow grey: stopped early by the scheduler (its last epoch is earlier); star: the best "
            "trial trained to the end."
        ),
        "tradeoff",
        study_figures.metric_vs_settings,
    ),
    "study_curves": (
        "Trials per epoch",
        (
            "The metric per epoch of every trial (epoch 0: at init); grey lines end "
            "where the scheduler stopped the trial."
        ),
        "training",
        study_figures.trial_curves,
    ),
}


def _study_objective(config: dict, study: dict) -> dict:
    """The config as runs_section reads its objective: the study's metric and mode."""
    return {**config, "tune": {**(config.get("tune") or {}), "metric": study["metric"], "mode": study["mode"]}}


def _study_best_section(study: dict) -> str:
    c = study["counts"]
    text = (
        f"Study <code>{html.escape(study['study'])}</code> ({study['search']} search, {study['scheduler']} "
        f"scheduler, {study['mode']} {html.escape(study['metric'])}): {study['n_trials']} trials, {c['ok']} "
        f"trained to the end, {c['stopped']} stopped early, {c['diverged']} diverged, {c['failed']} failed; "
        f"{sum(study['wall_s']):.0f} s."
    )
    return (
        f'<section id="best"><h2>Best config</h2><p>{text}</p>'
        f'<div class="box">{table_html(study_figures.best_table(study))}</div>'
        f'<p>Every trial: <a href="#runs">Trials</a> below.</p></section>'
    )


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def table_html(table: pd.DataFrame) -> str:
    return table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="—", border=0, classes="numbers")


def numbers(table: pd.DataFrame | None, what: str) -> str:
    """A table folded away: a closed <details> whose summary says what it is and its size, the table in a box that
    scrolls (a wide or long table stays inside the page)."""
    if table is None or table.empty:
        return ""
    rows, cols = table.shape
    return (
        f"<details><summary>{html.escape(what)}: {rows} row{'s' * (rows != 1)} × {cols} columns</summary>"
        f'<div class="box">{table_html(table)}</div></details>'
    )


def _figure_section(stem: str, title: str, caption: str, png: bytes, table: pd.DataFrame | None) -> str:
    img = base64.b64encode(png).decode()
    return (
        f'<section id="fig-{stem}"><h2>{html.escape(title)}</h2>'
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{img}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        f"{numbers(table, 'The numbers behind the figure')}</section>"
    )


def _status_section(final: pd.DataFrame, config: dict, runs: pd.DataFrame) -> str:
    """Runs: counts by status, the best run (and point, over seeds) by the sweep's metric, then the runs table."""
    counts = final["status"].value_counts().sort_index()
    text = ", ".join(f"{n} {status}" for status, n in counts.items()) or "none"
    return (
        f'<section id="runs"><h2>Runs</h2><p>{len(final)} runs: {html.escape(text)}.</p>'
        f"{runs_section(final, config, runs=runs)}</section>"
    )


def runs_section(
    final: pd.DataFrame, config: dict, settings: list[str] | None = None, runs: pd.DataFrame | None = None
) -> str:
    """The runs table (one row per run: the settings that vary, status, final metrics), sortable by a click on a
    column's header and filtered by the box above it (SCRIPT, inline); the best run by the sweep's metric marked ★,
    and the best point averaged over seeds said above it."""
    metric, mode = figures.objective(config)
    settings = figures.varying(config, final) if settings is None else settings
    table, best = figures.runs_table(final, settings, metric, mode)
    lines = []
    if best is None:
        lines.append(f"No run finished ok with a final {html.escape(metric)}: none is marked best.")
    else:
        row = table.iloc[best]
        where = ", ".join(f"{html.escape(k)} = {html.escape(figures.fmt(row[k]))}" for k in settings) or "its config"
        lines.append(
            f"<b>Best run</b> (★, by final {html.escape(metric)}, {mode}): {where}: "
            f"{html.escape(metric)} = {row[metric]:.4g}."
        )
        point = figures.best_point(final, settings, metric, mode)
        if point is not None and "seed" in settings:
            at = ", ".join(f"{html.escape(k)} = {html.escape(figures.fmt(point[k]))}" for k in settings if k != "seed")
            lines.append(
                f"<b>Best point</b> averaged over seeds: {at}: {html.escape(metric)} = {point['mean']:.4g} "
                f"± {point['std']:.2g} ({_runs_ok(point)})."
            )
    example = (  # a filter that would match the first row: a setting's value and its status
        f"e.g. {settings[0].rsplit('.', 1)[-1]}={_cell(table[settings[0]].iloc[0])} ok"
        if settings and len(table)
        else "e.g. ok"
    )
    lines_of = sparklines(runs, table["run_id"]) if runs is not None else {}
    drawn = [k for k in PAIRS if any(k in v for v in lines_of.values())]
    at = list(table.columns).index("run_id")  # each run's curves before its id: in view without scrolling
    before, after = list(table.columns[:at]), list(table.columns[at:])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["", *before])
    head += "".join(f'<th title="train dashed, test solid">{k} per epoch</th>' for k in drawn)
    head += "".join(f"<th>{html.escape(c)}</th>" for c in after)
    rows = []
    for i, r in table.iterrows():
        words = " ".join(f"{c.rsplit('.', 1)[-1]}={_cell(r[c])}" for c in [*settings, "status"]) + f" {r['run_id']}"
        cells = "".join(_td(r[c]) for c in before)
        cells += "".join(f'<td data-v="">{lines_of.get(r["run_id"], {}).get(k, "")}</td>' for k in drawn)
        cells += "".join(_td(r[c]) for c in after)
        mark = '<td data-v="1" title="best run">★</td>' if i == best else '<td data-v="0"></td>'
        cls = ' class="best"' if i == best else ""
        rows.append(f'<tr{cls} data-f="{html.escape(words.lower())}">{mark}{cells}</tr>')
    return (
        f'<p>{"<br>".join(lines)}</p><p class="filter"><label>Filter runs: <input type="search" class="filter" '
        f'data-table="runs-table" placeholder="{html.escape(example)}" size="28"></label> '
        f'<span class="shown" aria-live="polite">{len(table)} of {len(table)} runs shown</span>'
        f" <small>(words all in a row: <code>key=value</code> exactly, anything else a substring; "
        f"click a column header to sort)</small></p>"
        f'<div class="box"><table id="runs-table" class="numbers sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


PAIRS = figures.PAIRS
SPARK_W, SPARK_H, SPARK_POINTS = 120, 26, 60  # a run's curves in its row: px, and at most this many epochs drawn


def sparklines(runs: pd.DataFrame, run_ids) -> dict[str, dict[str, str]]:
    """run id -> {"loss": svg, "acc": svg}: each run's curves per epoch as a small inline SVG, train dashed and test
    solid, on one scale for every run (accuracy [0, 1]; loss from the sweep's least to its 99th percentile), so
    rows compare."""
    cols = [m for pair in PAIRS.values() for m in pair if m in runs]
    rows = runs.loc[runs["run_id"].isin(set(run_ids)), ["run_id", "epoch", *cols]].sort_values("epoch")
    losses = rows[[c for c in PAIRS["loss"] if c in rows]].to_numpy(dtype=float).ravel()
    losses = losses[np.isfinite(losses)]
    low = {"loss": float(losses.min()) if losses.size else 0.0, "acc": 0.0}
    top = {"loss": float(np.percentile(losses, 99)) if losses.size else 1.0, "acc": 1.0}
    out: dict[str, dict[str, str]] = {}
    for run_id, one in rows.groupby("run_id"):
        if len(one) > SPARK_POINTS:
            one = one.iloc[np.unique(np.linspace(0, len(one) - 1, SPARK_POINTS).round().astype(int))]
        epochs = one["epoch"].to_numpy(dtype=float)
        span = max(epochs.max() - epochs.min(), 1.0)
        out[run_id] = {}
        for what, pair in PAIRS.items():
            paths, last = [], []
            for column, dash in zip(pair, ("3,2", "")):
                if column not in one or one[column].isna().all():
                    continue
                ys = one[column].to_numpy(dtype=float)
                keep = np.isfinite(ys)
                xs = 1 + (epochs[keep] - epochs.min()) / span * (SPARK_W - 2)
                scaled = (ys[keep] - low[what]) / ((top[what] - low[what]) or 1.0)
                ys = SPARK_H - 1 - np.clip(scaled, 0, 1) * (SPARK_H - 2)
                points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
                stroke = f' stroke-dasharray="{dash}"' if dash else ""
                paths.append(f'<polyline points="{points}" fill="none" stroke="#234" stroke-width="1"{stroke}/>')
                last.append(f"{column} {one[column].iloc[-1]:.3g}")
            if paths:
                out[run_id][what] = (
                    f'<svg width="{SPARK_W}" height="{SPARK_H}" role="img" aria-label="{", ".join(last)}">'
                    f"<title>{', '.join(last)} (train dashed, test solid; epoch {epochs.min():g} to "
                    f"{epochs.max():g})</title>{''.join(paths)}</svg>"
                )
    return out


def _runs_ok(point) -> str:
    ok, bad = int(point["runs"]), int(point["not_ok"])
    return f"{ok} run{'s' * (ok != 1)} ok" + (f", {bad} not ok" if bad else "")


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.4g}"
    return str(v)


def _td(v) -> str:
    """A cell: its text (errors cut to 80 characters, the whole in its title), its sort key in data-v."""
    text = _cell(v)
    if isinstance(v, str) and len(v) > 80:
        return f'<td title="{html.escape(v)}" data-v="{html.escape(v)}">{html.escape(v[:80])}…</td>'
    shown = "—" if text == "" else text
    return f'<td data-v="{html.escape(text)}">{html.escape(shown)}</td>'


STYLE = """body { font: 16px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 0 auto; padding: 1.5em;
       color: #222; }
h1 { font-size: 1.6em; margin: 0 0 0.2em; } h2 { font-size: 1.25em; margin: 0 0 0.4em; }
code { font-size: 0.9em; } .meta { color: #555; margin-top: 0; }
nav { display: flex; flex-wrap: wrap; gap: 0.4em; margin: 1em 0 1.5em; }
nav a { padding: 0.3em 0.8em; border: 1px solid #ccd; border-radius: 4px; text-decoration: none; color: #234; }
nav a[aria-current] { background: #234; color: #fff; border-color: #234; }
.contents { font-size: 0.9em; color: #555; }
figure { margin: 0.5em 0; } figcaption { color: #444; font-size: 0.92em; margin-top: 0.3em; }
img { max-width: 100%; height: auto; display: block; }
details { margin: 0.6em 0; } summary { cursor: pointer; color: #234; }
table.tests { border-collapse: collapse; font-size: 0.85em; margin: 0.3em 0; }
table.tests td, table.tests th { padding: 2px 6px; border-bottom: 1px solid #e5e5e5; text-align: left; }
.null { font-size: 0.85em; color: #444; }
.box { overflow: auto; max-height: 26em; width: fit-content; max-width: 100%; border: 1px solid #ddd;
       margin-top: 0.4em; }
table.numbers { border-collapse: collapse; font-size: 0.85em; }
table.numbers td, table.numbers th { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: right;
       white-space: nowrap; }
table.numbers th { background: #f3f3f3; position: sticky; top: 0; }
pre { background: #f6f6f6; padding: 1em; overflow: auto; max-width: 100%; box-sizing: border-box;
      font-size: 0.85em; }
section { margin-bottom: 2.5em; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort=ascending]::after { content: " ▲"; }
table.sortable th[aria-sort=descending]::after { content: " ▼"; }
table.sortable tr.best td { background: #fff1c2; font-weight: 600; }
table.sortable svg { display: block; }
p.filter { font-size: 0.9em; } p.filter small { color: #555; }
"""  # the reports' CSS (the reproduction page adds its own after it)

SCRIPT = """document.querySelectorAll('table.sortable').forEach(table => {
  const body = table.tBodies[0], heads = [...table.tHead.rows[0].cells];
  const key = (row, i) => { const v = row.cells[i].dataset.v ?? row.cells[i].textContent;
    const n = Number(v); return v === '' ? null : (Number.isNaN(n) ? v.toLowerCase() : n); };
  heads.forEach((th, i) => {
    th.tabIndex = 0;
    const sort = () => {
      const up = th.getAttribute('aria-sort') !== 'ascending';
      heads.forEach(h => h.removeAttribute('aria-sort'));
      th.setAttribute('aria-sort', up ? 'ascending' : 'descending');
      const order = (a, b) => {  // empty cells last either way; numbers before words
        const x = key(a, i), y = key(b, i);
        if (x === null || y === null) return (x === null) - (y === null);
        if (typeof x !== typeof y) return typeof x === 'number' ? -1 : 1;
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
      };
      [...body.rows].sort(order).forEach(r => body.appendChild(r));
    };
    th.addEventListener('click', sort);
    th.addEventListener('keydown', e => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); } });
  });
});
document.querySelectorAll('input.filter').forEach(box => {
  const table = document.getElementById(box.dataset.table), shown = box.parentElement.nextElementSibling;
  box.addEventListener('input', () => {
    const words = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
    let n = 0;
    for (const row of table.tBodies[0].rows) {
      const tokens = row.dataset.f.split(' ');
      const hit = words.every(w => w.includes('=') ? tokens.includes(w) : row.dataset.f.includes(w));
      row.hidden = !hit; n += hit;
    }
    shown.textContent = `${n} of ${table.tBodies[0].rows.length} runs shown`;
  });
});
"""  # the runs table's sorting and filter: plain JS, inline (pages work offline)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{style}</style></head><body>
<header><h1>{title}</h1>
<p class="meta">{header}</p>
{nav}</header>
<main>
{contents}
{sections}
</main>
{config}
<script>
{script}</script>
</body></html>
"""
