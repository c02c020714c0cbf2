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


def length_generalization(final: pd.DataFrame, metric: str = "test_acc"):
    """Metric vs sequence length, one line per eigenvalue setting (real, imag), mean ± std over seeds."""
    table = summarise(final, [REAL, IMAG, LENGTH], metric)
    fig, ax = plt.subplots(figsize=(8.0, 4.2), layout="constrained")
    for (real, imag), t in table.groupby([REAL, IMAG]):
        t = t.sort_values(LENGTH)
        line, = ax.plot(t[LENGTH], t["mean"], marker="o", label=f"Re λ = {real:g}, Im scale = {imag:g}")
        ax.fill_between(t[LENGTH], t["mean"] - t["std"], t["mean"] + t["std"], color=line.get_color(), alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(table[LENGTH].unique()), [str(v) for v in sorted(table[LENGTH].unique())])
    ax.set_xlabel("sequence length L")
    ax.set_ylabel(f"final {metric.replace('_', ' ')}")
    ax.set_title("Length generalization (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="eigenvalue init", title_fontsize=8)
    return fig, table


def tradeoff_heatmap(final: pd.DataFrame, metric: str = "test_acc"):
    """Mean final metric over the (real part × imaginary scale) grid, one panel per length."""
    table = summarise(final, [LENGTH, REAL, IMAG], metric)
    lengths = sorted(table[LENGTH].unique())
    vmin, vmax = np.nanmin(table["mean"]), np.nanmax(table["mean"])
    fig, axes = plt.subplots(1, len(lengths), figsize=(3.6 * len(lengths) + 1.4, 3.8), squeeze=False,
                             layout="constrained")
    for ax, length in zip(axes[0], lengths):
        grid = table[table[LENGTH] == length].pivot(index=REAL, columns=IMAG, values="mean")
        im = ax.imshow(grid.values, origin="lower", aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_xticks(range(grid.shape[1]), [f"{v:g}" for v in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [f"{v:g}" for v in grid.index])
        for (i, j), v in np.ndenumerate(grid.values):
            ax.text(j, i, "—" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    color="white" if np.isnan(v) or v < (vmin + vmax) / 2 else "black", fontsize=8)
        ax.set_xlabel("imaginary scale s (Im λₙ = s·π·n)")
        ax.set_title(f"L = {length}")
    axes[0][0].set_ylabel("real part a (Re λ)")
    fig.colorbar(im, ax=axes[0].tolist(), label=f"final {metric.replace('_', ' ')} (mean over seeds)")
    fig.suptitle("Real × imaginary tradeoff")
    return fig, table


def training_curves(runs: pd.DataFrame, metric: str = "test_acc"):
    """Metric per epoch, one line per (real, imag, length), mean over seeds."""
    ok = runs[runs["status"] == "ok"]
    table = ok.groupby([LENGTH, REAL, IMAG, "epoch"])[metric].mean().reset_index()
    lengths = sorted(table[LENGTH].unique())
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.2 * len(lengths) + 1.6, 3.6), squeeze=False,
                             sharey=True, layout="constrained")
    for ax, length in zip(axes[0], lengths):
        for (real, imag), t in table[table[LENGTH] == length].groupby([REAL, IMAG]):
            ax.plot(t["epoch"], t[metric], label=f"Re {real:g}, Im {imag:g}")
        ax.set_xlabel("epoch")
        ax.set_title(f"L = {length}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric.replace("_", " "))
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig, table.pivot_table(index=[LENGTH, REAL, IMAG], columns="epoch", values=metric).reset_index()
