"""Report figures: each takes the sweep's final-epoch table and returns (figure, table of its numbers)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REAL, IMAG, LENGTH = "model.init.real", "model.init.imag", "seq_len"


def final_epoch(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its last epoch."""
    last = runs.groupby("run_id")["epoch"].transform("max")
    return runs[runs["epoch"] == last].reset_index(drop=True)


def summarise(final: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """mean, std and count of `metric` over seeds (diverged/failed runs counted apart)."""
    ok = final["status"] == "ok"
    g = final[ok].groupby(by)[metric]
    table = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=0), "runs": g.size()})
    bad = final[~ok].groupby(by).size().rename("not_ok")
    table = table.join(bad, how="outer").fillna({"runs": 0, "not_ok": 0})
    return table.astype({"runs": int, "not_ok": int}).reset_index()


MAX_COLUMNS = 4         # panels per row
MAX_LABELLED_CELLS = 64  # heatmap panels with more cells go without numbers in the cells


def panels(n: int, width: float = 3.6, height: float = 3.2, **kw):
    """n panels wrapped into rows of at most MAX_COLUMNS; returns (figure, flat list of the n axes)."""
    cols = min(n, MAX_COLUMNS)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 1.6, height * rows), squeeze=False,
                             layout="constrained", **kw)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def real_colours(reals) -> dict:
    """One colour per eigenvalue real part, from a colormap (reads at any number of values)."""
    reals = sorted(reals)
    cmap = plt.get_cmap("viridis")
    return {r: cmap(0.85 * i / max(len(reals) - 1, 1)) for i, r in enumerate(reals)}  # no pale yellow


def _real_key(fig, axes, colours: dict) -> None:
    """Legend of real parts when few, else a colorbar."""
    if len(colours) <= 8:
        handles = [plt.Line2D([], [], color=c, marker="o", label=f"{r:g}") for r, c in colours.items()]
        axes[-1].legend(handles=handles, title="Re λ", fontsize=7, title_fontsize=8,
                        loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        reals = list(colours)
        norm = matplotlib.colors.Normalize(min(reals), max(reals))
        cmap = matplotlib.colors.ListedColormap(plt.get_cmap("viridis")(np.linspace(0, 0.85, 256)))
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="Re λ", shrink=0.6)


def length_generalization(final: pd.DataFrame, metric: str = "test_acc"):
    """Metric vs sequence length, one panel per imaginary scale, one line per real part.

    Mean over seeds, with a ± std band while a panel has at most 6 lines.
    """
    table = summarise(final, [IMAG, REAL, LENGTH], metric)
    imags = sorted(table[IMAG].unique())
    colours = real_colours(table[REAL].unique())
    lengths = sorted(table[LENGTH].unique())
    fig, axes = panels(len(imags), sharey=True)
    for ax, imag in zip(axes, imags):
        for real, t in table[table[IMAG] == imag].groupby(REAL):
            t = t.sort_values(LENGTH)
            ax.plot(t[LENGTH], t["mean"], marker="o", ms=3, color=colours[real])
            if len(colours) <= 6:  # more bands than that hide the lines
                ax.fill_between(t[LENGTH], t["mean"] - t["std"], t["mean"] + t["std"], color=colours[real],
                                alpha=0.15)
        if len(lengths) > 2 and len(set(np.diff(lengths))) > 1:  # lengths not evenly spaced: log axis
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
        ax.set_xticks(lengths, [str(v) for v in lengths], fontsize=7)
        ax.set_title(f"Im scale s = {imag:g}", fontsize=9)
        ax.set_xlabel("sequence length L")
        ax.grid(alpha=0.3)
    for ax in axes[::MAX_COLUMNS]:
        ax.set_ylabel(f"final {metric.replace('_', ' ')}")
    _real_key(fig, axes, colours)
    fig.suptitle("Length generalization (mean ± std over seeds)")
    return fig, table


def tradeoff_heatmap(final: pd.DataFrame, metric: str = "test_acc"):
    """Mean final metric over the (real part × imaginary scale) grid, one panel per length."""
    table = summarise(final, [LENGTH, REAL, IMAG], metric)
    lengths = sorted(table[LENGTH].unique())
    vmin, vmax = np.nanmin(table["mean"]), np.nanmax(table["mean"])
    fig, axes = panels(len(lengths))
    for ax, length in zip(axes, lengths):
        grid = table[table[LENGTH] == length].pivot(index=REAL, columns=IMAG, values="mean")
        im = ax.imshow(grid.values, origin="lower", aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_xticks(range(grid.shape[1]), [f"{v:g}" for v in grid.columns], fontsize=7)
        ax.set_yticks(range(grid.shape[0]), [f"{v:g}" for v in grid.index], fontsize=7)
        if grid.size <= MAX_LABELLED_CELLS:
            for (i, j), v in np.ndenumerate(grid.values):
                ax.text(j, i, "—" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if np.isnan(v) or v < (vmin + vmax) / 2 else "black")
        ax.set_xlabel("imaginary scale s (Im λₙ = s·π·n)")
        ax.set_title(f"L = {length}", fontsize=9)
    for ax in axes[::MAX_COLUMNS]:
        ax.set_ylabel("real part a (Re λ)")
    fig.colorbar(im, ax=axes, label=f"final {metric.replace('_', ' ')} (mean over seeds)")
    fig.suptitle("Real × imaginary tradeoff")
    return fig, table


def training_curves(runs: pd.DataFrame, metric: str = "test_acc"):
    """Metric per epoch, one panel per imaginary scale, one line per real part (mean over seeds and lengths)."""
    ok = runs[runs["status"] == "ok"]
    table = ok.groupby([IMAG, REAL, "epoch"])[metric].mean().reset_index()
    imags = sorted(table[IMAG].unique())
    colours = real_colours(table[REAL].unique())
    fig, axes = panels(len(imags), sharey=True)
    for ax, imag in zip(axes, imags):
        for real, t in table[table[IMAG] == imag].groupby(REAL):
            ax.plot(t["epoch"], t[metric], color=colours[real])
        ax.set_title(f"Im scale s = {imag:g}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in axes[::MAX_COLUMNS]:
        ax.set_ylabel(metric.replace("_", " "))
    _real_key(fig, axes, colours)
    fig.suptitle("Training curves (mean over seeds and lengths)")
    return fig, table.pivot_table(index=[IMAG, REAL], columns="epoch", values=metric).reset_index()
