"""A tune study's part of a report: its best config, the metric against each searched setting, its trials' curves.

Each figure takes the study's table (runs.parquet: one row per trial and epoch) and its
study.json, and returns (figure, table of its numbers), as ssmpipe.report.figures does.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker
import numpy as np
import pandas as pd

from ssmpipe.report.figures import MAX_COLUMNS, panels

STYLE = {  # status -> marker style of a trial's point and line
    "ok": {"color": "#1f77b4", "marker": "o", "label": "trained to the end"},
    "stopped": {"color": "#9a9a9a", "marker": "o", "label": "stopped early (scheduler)"},
    "diverged": {"color": "#d62728", "marker": "x", "label": "diverged"},
    "failed": {"color": "#000000", "marker": "x", "label": "failed"},
}


def final_trials(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its last epoch."""
    last = runs.groupby("trial_id")["epoch"].transform("max")
    return runs[runs["epoch"] == last].sort_values("trial_id").reset_index(drop=True)


def best_table(study: dict) -> pd.DataFrame:
    """The best trial's searched values and its metric, as rows (what, value)."""
    best = study["best"]
    if not best:
        return pd.DataFrame({"what": ["best trial"], "value": ["none trained to the end"]})
    rows = [(key, _fmt(value)) for key, value in best["params"].items()]
    rows += [
        (f"final {study['metric']} (epoch {best['epoch']})", _fmt(best["value"])),
        ("trial", best["trial_id"]),
        ("run id", best["run_id"]),
    ]
    return pd.DataFrame(rows, columns=["what", "value"])


def metric_vs_settings(runs: pd.DataFrame, study: dict):
    """Final metric of each trial against each searched setting, one panel per setting; the best starred."""
    metric, keys = study["metric"], list(study["space"])
    final = final_trials(runs)
    best = (study["best"] or {}).get("trial_id")
    fig, axes = panels(len(keys), sharey=True)
    for ax, key in zip(axes, keys):
        kind = next(iter(study["space"][key]))
        x, ticks = _positions(final[key], kind)
        for status, style in STYLE.items():
            sel = (final["status"] == status).to_numpy()
            if sel.any():
                ax.scatter(
                    x[sel],
                    final[metric][sel],
                    s=28,
                    color=style["color"],
                    marker=style["marker"],
                    facecolors="none" if status == "stopped" else style["color"],
                    label=style["label"],
                )
        if best is not None and (final["trial_id"] == best).any():
            i = int(np.flatnonzero((final["trial_id"] == best).to_numpy())[0])
            ax.scatter([x[i]], [final[metric].iloc[i]], s=160, marker="*", color="#ff7f0e", zorder=3, label="best")
        if kind == "loguniform":
            log_axis(ax, x)
        if ticks is not None:
            ax.set_xticks(range(len(ticks)), [_fmt(v) for v in ticks], fontsize=7)
        ax.set_xlabel(key + (" (log scale)" if kind == "loguniform" else ""))
        ax.grid(alpha=0.3)
    for ax in axes[::MAX_COLUMNS]:
        ax.set_ylabel(f"{metric.replace('_', ' ')} at the trial's last epoch")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    axes[-1].legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(
        f"Study {study['study']}: {metric.replace('_', ' ')} against each searched setting ({len(final)} trials)"
    )
    return fig, final[["trial_id", *keys, "status", "epoch", metric]]


def trial_curves(runs: pd.DataFrame, study: dict):
    """Metric per epoch, one line per trial: those the scheduler stopped end early, in grey."""
    metric = study["metric"]
    final = final_trials(runs).set_index("trial_id")["status"]
    fig, axes = panels(1, width=6.0, height=3.6)
    ax = axes[0]
    seen = set()
    for tid, rows in runs.sort_values("epoch").groupby("trial_id"):
        status = final[tid]
        style = STYLE.get(status, STYLE["failed"])
        ax.plot(
            rows["epoch"],
            rows[metric],
            color=style["color"],
            alpha=0.8,
            lw=1.2,
            label=None if status in seen else style["label"],
        )
        seen.add(status)
    best = (study["best"] or {}).get("trial_id")
    if best is not None:
        rows = runs[runs["trial_id"] == best].sort_values("epoch")
        ax.plot(rows["epoch"], rows[metric], color="#ff7f0e", lw=2.2, label=f"best ({best})")
    ax.set_xlabel("epoch (0: at init)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"Study {study['study']}: trials' {metric.replace('_', ' ')} per epoch")
    table = runs.pivot_table(index="epoch", columns="trial_id", values=metric).reset_index()  # long, not wide
    table.columns.name = None
    return fig, table


def log_axis(ax, values: np.ndarray) -> None:
    """A log x axis that reads: labels at 1, 2, 5 × 10^k (at 10^k alone over more than two decades), written
    plainly (0.002, not 2×10⁻³), no minor labels (printed on top of each other across a decade or less)."""
    ax.set_xscale("log")
    finite = values[np.isfinite(values) & (values > 0)]
    decades = np.log10(finite.max() / finite.min()) if finite.size else 0.0
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0,) if decades > 2 else (1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.tick_params(axis="x", labelsize=7)


def _positions(values: pd.Series, kind: str):
    """x positions of a setting's values: numbers as they are; strings and booleans as categories."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=float), None
    cats = sorted(values.dropna().unique(), key=str)
    return np.array([cats.index(v) for v in values], dtype=float), cats


def _fmt(v) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4g}"
    return str(v)
