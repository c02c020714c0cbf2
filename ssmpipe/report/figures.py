"""Report figures: each takes the sweep's final-epoch table and returns (figure, table of its numbers)."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

REAL, IMAG, LENGTH = "model.init.real", "model.init.imag", "seq_len"
TRAIN_LENGTH, TEST_LENGTH = "train_len", "test_len"  # the lengths figure: trained at seq_len T, tested at T′


def final_epoch(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its last epoch, with its generalization gap (test − train loss)."""
    last = runs.groupby("run_id")["epoch"].transform("max")
    final = runs[runs["epoch"] == last].reset_index(drop=True)
    return final.assign(gap=final["test_loss"] - final["train_loss"])


def summarise(final: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """mean, std and count of `metric` over seeds (diverged/failed runs counted apart)."""
    ok = final["status"] == "ok"
    cols = list(dict.fromkeys([*by, metric]))  # the columns it needs: a row filter copies every column
    g = final.loc[ok, cols].groupby(by)[metric]
    table = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=0), "runs": g.size()})
    bad = final.loc[~ok, cols].groupby(by).size().rename("not_ok")
    table = table.join(bad, how="outer").fillna({"runs": 0, "not_ok": 0})
    return table.astype({"runs": int, "not_ok": int}).reset_index()


MAX_COLUMNS = 4  # panels per row
MAX_LABELLED_CELLS = 64  # heatmap panels with more cells go without numbers in the cells


def panels(n: int, width: float = 3.6, height: float = 3.2, **kw):
    """n panels wrapped into rows of at most MAX_COLUMNS; returns (figure, flat list of the n axes)."""
    cols = min(n, MAX_COLUMNS)
    rows = -(-n // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(max(width * cols + 1.6, 6.4), height * rows), squeeze=False, layout="constrained", **kw
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _label(column: str) -> str:
    return LABELS.get(column, column.replace("_", " "))


LABELS = {
    "epoch": "epoch",
    REAL: "real part a (Re λ)",
    IMAG: "imaginary scale s (Im λₙ = s·π·n)",
    LENGTH: "sequence length L",
    "test_acc": "test accuracy",
    "train_acc": "train accuracy",
    "test_loss": "test loss",
    "train_loss": "train loss",
    "gap": "gap: test − train loss",
    "s_A": "spectral abscissa s_A",
    "output_scale": "E|y_L| (first layer)",
    "tau": "τ (mean over channels)",
    "mc": "memory capacity",
    "grad_norm": "gradient norm",
    "model.init.s_A": "s_A at init",
    "reg.lambda": "regularization λ",
    "model.init.c_scaling": "init scaling of C",
    "task.moment": "moment coefficient b",
    "model.init.dt": "Δ rule",
    "model.init.scheme": "eigenvalue init",
    "model.train_A": "A trained",
    "task.lag": "lag τ",
    "task.name": "task",
    "mf": "memory function MF(τ)",
    "gram_cond": "Gram condition number κ",
    "model.block": "block",
    "model.kind": "layer",
    "model.init.dt_c": "c of the Δ rule Δ = c/√(L·λ_max)",
    TRAIN_LENGTH: "train length T",
    TEST_LENGTH: "test length T′",
    "len_test_acc": "test accuracy at T′",
    "len_test_loss": "test loss at T′",
}


def fmt(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) else str(v)


def _colours(values) -> dict:
    """One colour per value, from a colormap (reads at any number of values)."""
    values = sorted(values, key=lambda v: (isinstance(v, str), v))
    cmap = plt.get_cmap("viridis")
    return {v: cmap(0.85 * i / max(len(values) - 1, 1)) for i, v in enumerate(values)}  # no pale yellow


def _key(fig, axes, colours: dict, title: str) -> None:
    """Legend of the groups when few, else a colorbar."""
    numeric = all(isinstance(v, (int, float, np.floating, np.integer)) for v in colours)
    if len(colours) <= 8 or not numeric:
        handles = [plt.Line2D([], [], color=c, marker="o", label=fmt(v)) for v, c in colours.items()]
        axes[-1].legend(
            handles=handles, title=title, fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0)
        )
    else:
        values = list(colours)
        norm = matplotlib.colors.Normalize(min(values), max(values))
        cmap = matplotlib.colors.ListedColormap(plt.get_cmap("viridis")(np.linspace(0, 0.85, 256)))
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label=title, shrink=0.6)


def _title(fig, text: str) -> None:
    """The figure's title, wrapped to its width (about 15 characters an inch at 10 pt)."""
    fig.suptitle(textwrap.fill(text, int(15 * fig.get_figwidth())), fontsize=10)


def _panels_of(table: pd.DataFrame, panel: str | None):
    return [(None, table)] if panel is None else list(table.groupby(panel))


def _finish(fig, axes, parts, panel, group, colours, metric, x, logy, title) -> None:
    """What every panel figure ends with: scales, panel titles, axis labels, grid, key, title."""
    for ax, (value, _) in zip(axes, parts):
        if logy:
            ax.set_yscale("log")
        ax.set_title(f"{_label(panel)} = {fmt(value)}" if panel else "", fontsize=9)
        ax.set_xlabel(_label(x))
        ax.grid(alpha=0.3)
    for ax in axes[::MAX_COLUMNS]:
        ax.set_ylabel(_label(metric))
    if group:
        _key(fig, axes, colours, _label(group))
    _title(fig, title)


def lines(
    final: pd.DataFrame, metric: str, x: str, group: str | None = None, panel: str | None = None, logy: bool = False
):
    """Final `metric` against setting `x`, one line per `group` value, one panel per `panel` value.

    Mean over seeds (and any setting not named), with a ± std band while a panel has at most 6 lines.
    """
    by = [c for c in (panel, group, x) if c]
    table = summarise(final, by, metric)
    xs = sorted(table[x].unique())
    colours = _colours(table[group].unique()) if group else {None: "C0"}
    parts = _panels_of(table, panel)
    fig, axes = panels(len(parts), sharey=True)
    for ax, (_, t) in zip(axes, parts):
        for g, tg in t.groupby(group) if group else [(None, t)]:
            tg = tg.sort_values(x)
            ax.plot(tg[x], tg["mean"], marker="o", ms=3, color=colours[g])
            if len(colours) <= 6:  # more bands than that hide the lines
                ax.fill_between(tg[x], tg["mean"] - tg["std"], tg["mean"] + tg["std"], color=colours[g], alpha=0.15)
        numeric = all(isinstance(v, (int, float, np.integer, np.floating)) for v in xs)
        if numeric and len(xs) > 2 and len(set(np.round(np.diff(xs), 12))) > 1:  # not evenly spaced: log axis
            positive = [v for v in xs if v > 0]
            if min(xs) > 0:
                ax.set_xscale("log")
            elif min(xs) == 0 and len(positive) > 1:  # 0 and decades (λ = 0, 1e-4, ..., 0.1): linear near 0
                ax.set_xscale("symlog", linthresh=min(positive))
            ax.minorticks_off()
        if numeric:
            ax.set_xticks(xs, [fmt(v) for v in xs], fontsize=7)
    _finish(
        fig,
        axes,
        parts,
        panel,
        group,
        colours,
        metric,
        x,
        logy,
        f"{_label(metric)} against {_label(x)} (mean ± std over seeds)",
    )
    return fig, table


def heatmap(final: pd.DataFrame, metric: str, x: str, group: str, panel: str | None = None):
    """Mean final `metric` over the grid of settings `x` (columns) × `group` (rows), one panel per `panel` value.

    The colour scale shows the size of a difference (see `scale`): an accuracy runs from chance to 1, a gap is
    diverging around 0; the numbers are written in the cells (up to MAX_LABELLED_CELLS a panel)."""
    by = [c for c in (panel, group, x) if c]
    table = summarise(final, by, metric)
    cmap, norm, what = scale(metric, table["mean"], final)
    parts = _panels_of(table, panel)
    fig, axes = panels(len(parts))
    for ax, (value, t) in zip(axes, parts):
        grid = t.pivot(index=group, columns=x, values="mean")
        im = ax.imshow(grid.values, origin="lower", aspect="auto", cmap=cmap, norm=norm)
        ax.set_xticks(range(grid.shape[1]), [fmt(v) for v in grid.columns], fontsize=7)
        ax.set_yticks(range(grid.shape[0]), [fmt(v) for v in grid.index], fontsize=7)
        if grid.size <= MAX_LABELLED_CELLS:
            for (i, j), v in np.ndenumerate(grid.values):
                ax.text(
                    j,
                    i,
                    "—" if np.isnan(v) else f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color=_ink(cmap(norm(v))) if not np.isnan(v) else "black",
                )
        ax.set_xlabel(_label(x))
        ax.set_title(f"{_label(panel)} = {fmt(value)}" if panel else "", fontsize=9)
    for ax in axes[::MAX_COLUMNS]:
        ax.set_ylabel(_label(group))
    fig.colorbar(im, ax=axes, label=f"final {_label(metric)} (mean over seeds)\n{what}")
    _title(fig, f"{_label(metric)} over {_label(group)} × {_label(x)}")
    return fig, table


def chance(final: pd.DataFrame) -> float:
    """Chance accuracy of the sweep's task (mean of its chance_acc column), else 0."""
    if "chance_acc" in final and final["chance_acc"].notna().any():
        return float(final["chance_acc"].mean())
    return 0.0


def scale(metric: str, values: pd.Series, final: pd.DataFrame):
    """(colormap, norm, words) of a heatmap of `metric`: an accuracy on a fixed scale [chance, 1]; a gap or other
    signed measure diverging around 0; anything else from its min to its max (said so in the words)."""
    values = values.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if metric.endswith("acc"):
        floor = min(chance(final), low)
        norm = matplotlib.colors.Normalize(floor, 1.0)
        return plt.get_cmap("viridis"), norm, f"fixed scale: chance ({floor:.2g}) to 1"
    if low < 0 < high or metric == "gap":
        span = max(abs(low), abs(high)) or 1.0
        norm = matplotlib.colors.TwoSlopeNorm(0.0, -span, span)
        return plt.get_cmap("RdBu_r"), norm, "diverging around 0"
    if high == low:
        high = low + 1.0
    return plt.get_cmap("viridis"), matplotlib.colors.Normalize(low, high), f"scale: min {low:.3g} to max {high:.3g}"


def _ink(rgba) -> str:
    """Black or white text, whichever reads on a cell of colour `rgba` (its luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


PAIRS = {"loss": ("train_loss", "test_loss"), "acc": ("train_acc", "test_acc")}  # curves drawn side by side


def curves(runs: pd.DataFrame, metric: str, group: str | None = None, panel: str | None = None, logy: bool = False):
    """`metric` per epoch, one line per `group` value, one panel per `panel` value (mean over the rest).

    A loss or accuracy metric is drawn beside its partner, train (dashed) and test (solid) each: loss on the
    left, accuracy on the right, a row per `panel` value, each run a thin line under its group's mean. Runs that
    diverged count up to their last finite epoch. The table: `metric`'s means, a row per epoch."""
    by = [c for c in (panel, group) if c]
    cols = [*by, "run_id", "epoch", metric, *(m for pair in PAIRS.values() for m in pair if m in runs)]
    ok = runs.loc[runs["status"] != "failed", list(dict.fromkeys(cols))]  # not every column: a row filter copies
    table = ok.groupby(by + ["epoch"])[metric].mean().reset_index()
    colours = _colours(table[group].unique()) if group else {None: "C0"}
    if metric in {m for pair in PAIRS.values() for m in pair} and all(m in runs for p in PAIRS.values() for m in p):
        return _loss_and_accuracy(ok, group, panel, colours, logy and metric.endswith("loss")), per_epoch(
            table, by, metric
        )
    parts = _panels_of(table, panel)
    fig, axes = panels(len(parts), sharey=True)
    for ax, (_, t) in zip(axes, parts):
        for g, tg in t.groupby(group) if group else [(None, t)]:
            ax.plot(tg["epoch"], tg[metric], color=colours[g], marker="o" if len(tg) == 1 else None, ms=3)
    _finish(
        fig,
        axes,
        parts,
        panel,
        group,
        colours,
        metric,
        "epoch",
        logy,
        f"{_label(metric)} per epoch (epoch 0: at init; mean over seeds)",
    )
    return fig, per_epoch(table, by, metric)


def _loss_and_accuracy(runs: pd.DataFrame, group, panel, colours: dict, logy: bool):
    """Loss (left) and accuracy (right) per epoch, a row per `panel` value: per group its mean over runs, train
    dashed and test solid, over each run's test curve as a thin line of the group's colour."""
    parts = list(runs.groupby(panel)) if panel else [(None, runs)]
    fig, axes = plt.subplots(
        len(parts), 2, figsize=(10.0, 2.9 * len(parts) + 0.9), squeeze=False, sharex=True, layout="constrained"
    )
    for row, (value, part) in zip(axes, parts):
        for ax, (what, (train, test)) in zip(row, PAIRS.items()):
            for g, rows in part.groupby(group) if group else [(None, part)]:
                colour = colours[g]
                for _, one in rows.groupby("run_id"):
                    ax.plot(one["epoch"], one[test], color=colour, lw=0.6, alpha=0.35)
                mean = rows.groupby("epoch")[[train, test]].mean()
                ax.plot(mean.index, mean[train], color=colour, lw=1.8, ls="--")
                ax.plot(mean.index, mean[test], color=colour, lw=1.8)
            if logy and what == "loss":
                ax.set_yscale("log")
            ax.set_ylabel(what if what == "loss" else "accuracy")
            ax.set_title(f"{_label(panel)} = {fmt(value)}" if panel else "", fontsize=9)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch (0: at init)")
    handles = [plt.Line2D([], [], color=c, lw=1.8, label=fmt(v)) for v, c in colours.items() if v is not None]
    handles += [
        plt.Line2D([], [], color="#444", lw=1.8, ls="--", label="train (mean)"),
        plt.Line2D([], [], color="#444", lw=1.8, label="test (mean)"),
        plt.Line2D([], [], color="#444", lw=0.6, alpha=0.5, label="test, each run"),
    ]
    axes[0][-1].legend(
        handles=handles,
        title=_label(group) if group else None,
        fontsize=7,
        title_fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
    )
    _title(fig, "loss and accuracy per epoch, train and test (epoch 0: at init)")
    return fig


def per_epoch(table: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """A long (by…, epoch, metric) table as one row per epoch and one column per line of the figure
    ("real=-0.5, imag=1"): long in epochs (a box scrolls down), not 153 columns wide."""
    if not by:
        return table[["epoch", metric]].reset_index(drop=True)
    wide = table.pivot_table(index="epoch", columns=by, values=metric)
    names = [c if isinstance(c, tuple) else (c,) for c in wide.columns]
    wide.columns = [", ".join(f"{_short(k)}={fmt(v)}" for k, v in zip(by, c)) for c in names]
    return wide.reset_index()


def _short(column: str) -> str:
    return column.rsplit(".", 1)[-1]


def profile(rows: pd.DataFrame, metric: str, group: str | None = None, panel: str | None = None, logy: bool = False):
    """A curve-valued measure (`mf`: MF(τ) for τ < T) against its index τ, one line per `group` value, one panel per
    `panel` value; mean over the runs (seeds and any setting not named) that have it. The table: its value at
    τ = 0, 1, 4, 16, … and the last τ, and its sum (for mf: the memory capacity MC)."""
    rows = rows[(rows["status"] == "ok") & rows[metric].notna()]
    by = [c for c in (panel, group) if c]
    means, records = {}, []
    for key, sel in rows.groupby(by) if by else [((), rows)]:
        key = key if isinstance(key, tuple) else (key,)
        curves_ = [np.asarray(v, float) for v in sel[metric]]
        width = max(len(c) for c in curves_)
        mean = np.nanmean([np.pad(c, (0, width - len(c)), constant_values=np.nan) for c in curves_], axis=0)
        means[key] = mean
        at = sorted({0, *(4**k for k in range(8) if 4**k < width), width - 1})
        records.append(
            {
                **dict(zip(by, key)),
                "runs": len(curves_),
                **{f"τ={t}": mean[t] for t in at},
                "sum": float(np.nansum(mean)),
            }
        )
    table = pd.DataFrame(records)
    colours = _colours(table[group].unique()) if group else {None: "C0"}
    parts = _panels_of(table, panel)
    fig, axes = panels(len(parts), sharey=True)
    for ax, (_, t) in zip(axes, parts):
        for _, r in t.iterrows():
            key = tuple(r[c] for c in by)
            ax.plot(np.arange(len(means[key])), means[key], color=colours[r[group] if group else None], lw=1.2)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
    _finish(
        fig,
        axes,
        parts,
        panel,
        group,
        colours,
        metric,
        "lag τ",
        logy,
        f"{_label(metric)} against the lag τ (mean over seeds)",
    )
    return fig, table


def lengths(final: pd.DataFrame, metric: str, panel: str | None = None):
    """Train at T, test at T′: final `metric` (len_test_acc / len_test_loss, one value per test_seq_lens entry)
    over train length seq_len (rows) × test length T′ (columns), mean over seeds, one panel per `panel` value."""
    rows = final[final[metric].notna()]
    long = pd.DataFrame(
        [
            {
                **({panel: r[panel]} if panel else {}),
                TRAIN_LENGTH: r[LENGTH],
                TEST_LENGTH: int(T),
                "status": r["status"],
                metric: float(v),
            }
            for _, r in rows.iterrows()
            for T, v in zip(r["test_seq_lens"], r[metric])
        ]
    )
    return heatmap(long, metric, x=TEST_LENGTH, group=TRAIN_LENGTH, panel=panel)


KINDS = {"lines": lines, "heatmap": heatmap, "curves": curves, "profile": profile, "lengths": lengths}


# --- the runs table: one row per run, the settings that vary, status, final metrics; the best marked ----------

SEED = "seed"
FINAL_COLUMNS = ("train_loss", "test_loss", "train_acc", "test_acc", "gap")


def objective(config: dict) -> tuple[str, str]:
    """(metric, mode) that picks a sweep's best point: its tune: section's when it has one, else final test_acc,
    max (the metric every default figure and claim reads)."""
    tune = config.get("tune") or {}
    return tune.get("metric", "test_acc"), tune.get("mode", "max")


def varying(config: dict, final: pd.DataFrame) -> list[str]:
    """The settings that take more than one value in the sweep's runs: its grid axes (a study: its searched
    settings), in the config's order, seed last."""
    space = (config.get("tune") or {}).get("space") or config.get("grid") or {}
    keys = [k for k in space if k in final and final[k].astype(str).nunique() > 1]
    return sorted(keys, key=lambda k: k == SEED)


def runs_table(final: pd.DataFrame, settings: list[str], metric: str, mode: str) -> tuple[pd.DataFrame, int | None]:
    """(one row per run: settings, status, last epoch, final metrics, run id, error if any run has one; the
    position of the best run by `metric` (`mode` max or min) among those ok, None when none is)."""
    extra = ["trial_id"] if "trial_id" in final and final["trial_id"].notna().any() else []
    metrics = [c for c in (metric, *FINAL_COLUMNS) if c in final and final[c].notna().any()]  # the sweep's first
    errors = ["error"] if final["error"].notna().any() else []
    cols = list(dict.fromkeys([*extra, *settings, "status", "epoch", *metrics, "run_id", *errors]))
    table = final[cols].sort_values([*extra, *settings, "run_id"], kind="stable").reset_index(drop=True)
    ok = table["status"].eq("ok") & table[metric].notna() if metric in table else table["status"].eq("__none__")
    if not ok.any():
        return table, None
    scores = table.loc[ok, metric]
    return table, int(scores.idxmax() if mode == "max" else scores.idxmin())


def best_point(final: pd.DataFrame, settings: list[str], metric: str, mode: str) -> pd.Series | None:
    """The best point by `metric` averaged over seeds (its settings but seed; mean, std, runs), None when no run
    is ok or nothing but seed varies."""
    by = [s for s in settings if s != SEED]
    if not by or metric not in final:
        return None
    table = summarise(final, by, metric).dropna(subset=["mean"])
    if table.empty:
        return None
    return table.loc[table["mean"].idxmax() if mode == "max" else table["mean"].idxmin()]


def pooled(config: dict, named: list[str | None]) -> dict[str, list]:
    """Grid settings (besides seed) with more than one value that a figure naming `named` averages over."""
    grid = config.get("grid") or {}
    return {k: v for k, v in grid.items() if k != SEED and len(v) > 1 and k not in named}


def pooled_words(over: dict[str, list]) -> str:
    """'averaged over sequence length L = 64, 128 and …' (empty when nothing is pooled)."""
    return " and ".join(f"{_label(k)} = {', '.join(fmt(v) for v in values)}" for k, values in over.items())
