"""The reproduction page: does the data agree with each paper, and how sure are we — one HTML page.

It owns the papers' side of the comparison, written by hand from ../shared/SPEC.md: PAPERS (the four
papers' titles) and REFERENCE (each claim's paper, what the paper reports, with its numbers, and the SPEC
section it comes from). build_papers_page reads each experiment's runs.parquet and config.yaml snapshot
alone, runs the claims its config lists (report.claims) and writes <results>/papers/index.html: per paper,
per claim, one row per experiment that checks it, with the verdict, the numbers measured, the runs, seeds,
statuses and spread over seeds, and relative links to the experiment's report pages and figures. An
experiment without a table yet is "not run yet". Nothing here trains or draws: it takes seconds.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from ssmpipe import config as cfg
from ssmpipe.atomic import write_text
from ssmpipe.config import InputError, needs_data
from ssmpipe.layout import Layout
from ssmpipe.report import STYLE, nothing_ok, read_config, read_sweep, tests_html, verdict_html
from ssmpipe.report.claims import CLAIMS, Verdict
from ssmpipe.report.claims import VERDICTS as TESTED
from ssmpipe.report.figures import final_epoch, summarise
from ssmpipe.report.stats import LEVEL

NOT_RUN = "not run yet"
NEEDS_DATA = "needs data"
VERDICTS = (*TESTED, NOT_RUN, NEEDS_DATA)

PAPERS = {  # SPEC.md's section headings
    "000": "Liu & Li, “From Generalization Analysis to Optimization Designs for SSMs” (ICML 2024, arXiv 2405.02670)",
    "001": "Honarpisheh et al., “Generalization Error Analysis for Selective SSMs Through the Lens of Attention” "
    "(arXiv 2502.01473)",
    "002": "Liu & Li, “Autocorrelation Matters: Understanding the Role of Initialization Schemes for State Space "
    "Models” (ICLR 2025, arXiv 2411.19455)",
    "003": "Guan et al., “Memory Determines Learning Direction: A Theory of Gradient-Based Optimization in State "
    "Space Models” (arXiv 2510.00563)",
}


@dataclass(frozen=True)
class Reference:
    paper: str
    says: str  # what the paper reports, with its numbers (SPEC.md's words)
    section: str  # where in SPEC.md
    metric: str  # the column whose spread over seeds says how sure the verdict is
    at: str = "final"  # the metric at each run's last epoch ("final") or at init ("init")


REFERENCE = {  # claim (ssmpipe/report/claims.py) -> the paper's values, by paper
    "output_scale_vs_length": Reference(
        "000",
        "Fig. 2, a process whose variance grows with time (moment b ∈ {0.01, 0.1, 1}), L from 1 to 1000: "
        "without the τ scaling C → C/√τ, E|y_L| and the gradient norm at init grow with L and b; with it they stay "
        "O(1); plus the training MSE at L = 1000 with and without it.",
        "SPEC 000, Experiments, Fig. 2",
        "output_scale",
        "init",
    ),
    "regularizer_gap": Reference(
        "000",
        "Ablation table {none, scaling, regularizer, both} × tasks: train loss, test loss and the "
        "generalization gap, and the gap against λ; the regularizer is loss = R_n(θ) + λ·τ(θ), λ ∈ {0, 1e-4, "
        "1e-3, 1e-2, 1e-1}.",
        "SPEC 000, Optimization designs 2; Experiments, Ablation table",
        "gap",
    ),
    "tau_tracks_gap": Reference(
        "000",
        "The generalization bound depends on the parameters and data only through τ(θ) = ψ²: a larger τ, a "
        "larger bound on the gap (the bound itself is not evaluated numerically in the paper's tables).",
        "SPEC 000, Measure τ(θ)",
        "gap",
    ),
    "s_A_driven_negative": Reference(
        "001",
        "Exp. 1: init s_A = 0.1, trained at several T (Majority 50..350, IMDb 300..600, ListOps 100..700): "
        "training drives s_A below 0.",
        "SPEC 001, Experiments, Exp. 1",
        "s_A",
    ),
    "s_A_init_sweep": Reference(
        "001",
        "Exp. 1b: init s_A ∈ {−0.1, −0.08, …, 0.1} at fixed T (250 / 500 / 300). The bound is independent "
        "of T when s_A < 0 and grows exponentially in T when s_A > 0; runs with s_A > 0 may diverge.",
        "SPEC 001, Quantities; Experiments, Exp. 1b",
        "test_acc",
    ),
    "selective_bound_tracks_gap": Reference(
        "001",
        "The bound's length dependence is through ρ_A = (1 + e^{p − B_q B_u})^{s_A + η} and S₂ = Σ t ρ_A^t: "
        "independent of T when s_A < 0, exponential in T when s_A > 0.",
        "SPEC 001, Quantities",
        "gap",
    ),
    "accuracy_flat_in_length": Reference(
        "001",
        "Exp. 2: s_A = 0, 5 seeds, test accuracy against T: Majority ≈ 0.86–0.89 flat in T (25..400); "
        "IMDb ≈ 0.74 → 0.85 (100..2000); ListOps ≈ 0.15–0.17 (100..1000).",
        "SPEC 001, Experiments, Exp. 2",
        "test_acc",
    ),
    "dt_rule_keeps_output_scale": Reference(
        "002",
        "For the output to be O(1) at init, Δ ≲ 1/√(L·λ_max(E[uuᵀ])): white noise (λ_max ≈ 1) Δ ~ L^−1/2, "
        "fully correlated input (λ_max ≈ L) Δ ~ L^−1; S4D's default is Δ ~ LogUniform[1e-3, 1e-1].",
        "SPEC 002, Claims, timescale vs length and autocorrelation",
        "output_scale",
        "init",
    ),
    "imaginary_part_tradeoff": Reference(
        "002",
        "There is an approximation–estimation tradeoff between large and small imaginary parts "
        "(sweep λ_n = a + i·s·πn, a ∈ {−1, −0.5, −0.1, 0}, s ∈ {0, 0.1, 1, 10}).",
        "SPEC 002, Claims, imaginary part; Eigenvalue init schemes",
        "test_acc",
    ),
    "gram_conditioning": Reference(
        "002",
        "Im λ sets the conditioning of the SSM's Gram matrix, hence optimization speed.",
        "SPEC 002, Claims, imaginary part",
        "train_loss",
    ),
    "zero_real_part_stable": Reference(
        "002",
        "Re λ = 0 (no decay) can be stable when Δ is chosen by the autocorrelation rule, and avoids memory decay.",
        "SPEC 002, Claims, zero real part",
        "test_acc",
    ),
    "memory_predicts_learning": Reference(
        "003",
        "The gradient with respect to the readout is governed by MF: what the model remembers at init is "
        "what it learns first, so init with the longest memory wins (MC = Σ_τ MF(τ) ≤ N; MF curves for N = 32, "
        "T = 1024).",
        "SPEC 003, Claims; Experiments",
        "test_acc",
    ),
    "memory_lag_tradeoff": Reference(
        "003",
        "There is an accuracy–length tradeoff: more memory at long lags costs precision at short ones "
        "(accuracy of recalling lag τ against τ, per init, on a delay/copy task).",
        "SPEC 003, Claims; Experiments",
        "test_acc",
    ),
    "fixed_vs_trained": Reference(
        "003",
        "Freezing the recurrent eigenvalues (reservoir style, RC) converges faster and matches or beats "
        "learning them on LRA, except ListOps.",
        "SPEC 003, Claims",
        "test_acc",
    ),
    "memory_s4_equals_s4d": Reference(
        "003",
        "MF is invariant under similarity transforms, so S4 (DPLR/HiPPO) and its diagonalisation S4D have the "
        "same memory.",
        "SPEC 003, Memory function",
        "mc",
        "init",
    ),
    "memory_hard_to_extend": Reference(
        "003",
        "Extending memory is difficult: gradient training barely moves the memory the init gives (what is "
        "remembered at init is what is learned).",
        "SPEC 003, Claims",
        "mc",
    ),
}


@dataclass
class Experiment:
    sweep: str
    config: dict  # the config snapshot (or, not run yet, the experiment's own file)
    runs: pd.DataFrame | None  # every (run, epoch) row; None: not run yet
    final: pd.DataFrame | None  # each run's last epoch
    needs: str | None = None  # not run: why it cannot run here (its data set is not on this machine)


@dataclass
class Check:  # one row of the page: a claim checked by one experiment
    name: str
    experiment: Experiment
    verdict: Verdict | None  # None: not run yet (or it needs data)


def load_experiment(results: Path, item: str) -> Experiment:
    """A sweep name, or an experiment config file (.yaml/.yml: its sweep:), read from the store alone."""
    own = read_config(Path(item)) if item.endswith((".yaml", ".yml")) else None
    sweep = own["sweep"] if own else item
    cfg.check_name(sweep)
    store = Layout(results)
    if not store.config_path(sweep).is_file() and own is None:
        raise InputError(f"no sweep {sweep!r} under {str(results)!r} (no {str(store.config_path(sweep))!r})")
    if not store.table_path(sweep).is_file():  # planned, or not even that: not run yet
        config = read_config(store.config_path(sweep)) if own is None else own
        return Experiment(sweep, config, None, None, needs_data(config))
    runs, config = read_sweep(store, sweep)
    return Experiment(sweep, config, runs, final_epoch(runs))


def check(experiment: Experiment, name: str) -> Check:
    """The claim's verdict on this experiment's table ("inconclusive", with the reason, when no run finished ok)."""
    if experiment.runs is None:
        return Check(name, experiment, None)
    nothing = nothing_ok(experiment.final)
    verdict = (
        Verdict(REFERENCE[name].paper, "", "inconclusive", nothing, pd.DataFrame())
        if nothing
        else CLAIMS[name](experiment.runs, experiment.final)
    )
    return Check(name, experiment, verdict)


def word(c: Check) -> str:
    """The check's verdict word (one of VERDICTS)."""
    if c.verdict:
        return c.verdict.verdict
    return NEEDS_DATA if c.experiment.needs else NOT_RUN


def tally(checks: list[Check]) -> dict[str, int]:
    """verdict word -> how many of these checks have it."""
    return {v: sum(word(c) == v for c in checks) for v in VERDICTS}


def build_papers_page(results: Path, sweeps: list[str], out: Path | None = None) -> Path:
    """Write the reproduction page for these sweeps (names or experiment files) to `out`
    (default <results>/papers/index.html); return its path."""
    results = Path(results)
    out = Path(out) if out else Layout(results).papers_path()
    experiments = list({e.sweep: e for e in (load_experiment(results, s) for s in sweeps)}.values())
    checks = [check(e, name) for e in experiments for name in e.config["report"].get("claims", [])]
    sections = [
        _paper_section(paper, title, [c for c in checks if REFERENCE[c.name].paper == paper], results, out.parent)
        for paper, title in PAPERS.items()
    ]
    page = _PAGE.format(
        style=STYLE,
        summary=_summary(checks, experiments),
        glance=_glance(checks),
        sections="\n".join(sections) + _not_reproduced(checks, experiments),
        sweeps=", ".join(f"<code>{html.escape(e.sweep)}</code>" for e in experiments),
    )
    write_text(out, page)
    return out


def _summary(checks: list[Check], experiments: list[Experiment]) -> str:
    """One paragraph: how many checks (and claims) are supported, undecided and not run, and at what scale."""
    ran = [c for c in checks if c.verdict]
    count = tally(checks)
    scales = sorted({str(e.config.get("scale", "small")) for e in experiments if e.runs is not None})
    claims = {c.name for c in ran}
    always = {n for n in claims if all(word(c) == "supported" for c in ran if c.name == n)}
    runs = sum(e.final["run_id"].nunique() for e in experiments if e.final is not None)
    text = (
        f"{count['supported']} of {len(ran)} claim checks (claim × experiment) supported at "
        f"{' and '.join(scales) or 'no'} scale; {count['not supported']} not supported; "
        f"{count['inconclusive']} inconclusive (the data cannot decide; each says why); {count['no data']} "
        f"without the settings to decide. {len(always)} of {len(claims)} claims are supported by every "
        f"experiment that checks them. {sum(e.runs is not None for e in experiments)} of {len(experiments)} "
        f"experiments have run ({runs} runs); {count[NOT_RUN]} checks wait for an experiment not run yet, "
        f"{count[NEEDS_DATA]} for a data set that is not here."
    )
    missing = [n for n in REFERENCE if n not in {c.name for c in checks}]
    if missing:
        text += f" No experiment here checks {len(missing)} of the {len(REFERENCE)} claims (shown without a row)."
    return (
        f"<p>{html.escape(text)} A verdict is a statistical test of what these sweeps measured "
        f"(<code>ssmpipe/report/claims.py</code>: each claim's null, tests at level {LEVEL:g} with "
        f"{100 * (1 - 2 * LEVEL):.0f}% intervals), not what the paper found. Its calibration — how often "
        "no-effect tables are called supported, how often a planted effect is found — is "
        "<code>benchmarks/claim_controls.py</code>.</p>"
    )


def _not_reproduced(checks: list[Check], experiments: list[Experiment]) -> str:
    """What this page does not reproduce, and why: checks not supported or undecided, experiments not run or without
    their data, claims no experiment checks, and the experiments' stated deviations from the papers."""
    items = []
    for c in checks:
        w = word(c)
        if w == "supported":
            continue
        why = (
            (c.verdict.finding if w in ("inconclusive", "no data") else "its tests, above")
            if c.verdict
            else (c.experiment.needs or "run it: make experiments")
        )
        items.append(
            f'<li><a href="#{c.name}"><code>{c.name}</code></a> in <code>'
            f"{html.escape(c.experiment.sweep)}</code>: {verdict_html(w)} — {html.escape(why)}</li>"
        )
    checked = {c.name for c in checks}
    items += [
        f"<li><code>{n}</code>: no experiment among these sweeps checks it</li>" for n in REFERENCE if n not in checked
    ]
    for e in experiments:
        scale = str(e.config.get("scale", "small"))
        deviations = e.config.get("report", {}).get("deviations", [])
        if scale != "paper" and e.runs is not None:
            items.append(
                f"<li><code>{html.escape(e.sweep)}</code> ran at {html.escape(scale)} scale (sizes, "
                "epochs and seeds cut to run on a 2-core machine in minutes); the papers' sizes: "
                "<code>make experiments SCALE=paper</code> (days on CPU: GPUs on SLURM)</li>"
            )
        items += [
            f"<li><code>{html.escape(e.sweep)}</code> at paper scale differs from the paper: {html.escape(str(d))}</li>"
            for d in deviations
        ]
    if not items:
        return ""
    return f'<section><h2 id="not-reproduced">Not reproduced here, and why</h2><ul>{"".join(items)}</ul></section>'


def _glance(checks: list[Check]) -> str:
    """One line per claim: its verdict in each experiment that checks it."""
    rows = []
    for name, ref in REFERENCE.items():
        mine = [c for c in checks if c.name == name]
        verdicts = (
            " · ".join(f"{verdict_html(word(c))} <small>{html.escape(c.experiment.sweep)}</small>" for c in mine)
            or '<span class="quiet">no experiment here</span>'
        )
        rows.append(
            f'<tr><td>{ref.paper}</td><td><a href="#{name}"><code>{name}</code></a></td><td>{verdicts}</td></tr>'
        )
    return (
        f'<div class="scroll"><table class="page"><tr><th>paper</th><th>claim</th><th>verdicts</th></tr>'
        f"{''.join(rows)}</table></div>"
    )


def _paper_section(paper: str, title: str, checks: list[Check], results: Path, here: Path) -> str:
    """The paper's claims, each with its reference values and one row per experiment that checks it."""
    count = tally(checks)
    counts = ", ".join(f"{n} {v}" for v, n in count.items() if n) or "no experiment here checks its claims"
    parts = [
        f'<section><h2 id="paper-{paper}">{paper} — {html.escape(title)}</h2>'
        f"<p>Checks of its claims: {html.escape(counts)}.</p>"
    ]
    for name, ref in REFERENCE.items():
        if ref.paper != paper:
            continue
        mine = [c for c in checks if c.name == name]
        statement = next((c.verdict.claim for c in mine if c.verdict and c.verdict.claim), "")
        rows = "".join(_check_row(c, results, here) for c in mine)
        parts.append(
            f'<h3 id="{name}"><code>{name}</code> {html.escape(statement)}</h3>'
            f'<p class="ref"><b>Paper:</b> {html.escape(ref.says)} <i>({html.escape(ref.section)})</i></p>'
            + (
                f'<div class="scroll"><table class="page"><tr><th class="w1">experiment</th><th>verdict</th>'
                f'<th class="w3">measured</th><th class="w2">how sure</th><th class="w1">report and figures'
                f"</th></tr>{rows}</table></div>"
                if rows
                else '<p class="quiet">No experiment among these sweeps checks this claim.</p>'
            )
        )
    return "\n".join(parts) + "</section>"


def _check_row(c: Check, results: Path, here: Path) -> str:
    e = c.experiment
    title = html.escape(e.config["report"].get("title", e.sweep))
    where = f"{title}<br><code>{html.escape(e.sweep)}</code>, {html.escape(str(e.config.get('scale', 'small')))} scale"
    verdict = f'<tr><td>{where}</td><td class="v">{verdict_html(word(c))}</td>'
    if c.verdict is None:
        why = (
            html.escape(e.needs)
            if e.needs
            else f"No <code>runs.parquet</code> under <code>{html.escape(e.sweep)}/</code> yet."
        )
        return f'{verdict}<td colspan="3" class="quiet">{why}</td></tr>'
    return (
        f"{verdict}<td>{tests_html(c.verdict)}</td><td>{html.escape(how_sure(e, REFERENCE[c.name]))}"
        f"</td><td>{_links(e, results, here)}</td></tr>"
    )


def how_sure(e: Experiment, ref: Reference) -> str:
    """Runs, seeds and statuses, and the spread of the claim's key metric over seeds (per setting) and over runs."""
    final = e.final
    counts = final["status"].value_counts()
    seeds = final["seed"].nunique() if "seed" in final else 1
    text = (
        f"{len(final)} runs, {seeds} seed{'s' * (seeds != 1)}: "
        + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("ok", "diverged", "failed"))
        + "."
    )
    rows = final if ref.at == "final" else e.runs[e.runs["epoch"] == 0]
    values = rows.loc[rows["status"] == "ok", ref.metric].dropna() if ref.metric in rows else pd.Series(dtype=float)
    label = f"{ref.metric}{' at init' if ref.at == 'init' else ''}"
    if values.empty:
        return f"{text} {label}: not measured in ok runs."
    axes = [a for a in e.config.get("grid", {}) if a != "seed" and a in rows]
    by_setting = summarise(rows.assign(all_runs=0), ["all_runs", *axes], ref.metric).dropna(subset=["std"])
    spread = (
        f"std over seeds median {by_setting['std'].median():.3g}, max {by_setting['std'].max():.3g} "
        f"({len(by_setting)} settings)"
        if seeds > 1
        else "one seed: no spread over seeds"
    )
    return f"{text} {label}: {spread}; {values.min():.3g} to {values.max():.3g} over {len(values)} ok runs."


def _links(e: Experiment, results: Path, here: Path) -> str:
    """Relative links to the experiment's report pages and figure files that exist."""
    report = Layout(results).report_dir(e.sweep)
    pages = [
        (f, label)
        for f, label in (("index.html", "report"), ("length.html", "length"), ("tradeoff.html", "tradeoffs"))
        if (report / f).is_file()
    ]
    figures = [
        (f"figures/{f['name']}.png", f.get("title", f["name"]))
        for f in e.config["report"].get("figures", [])
        if (report / "figures" / f"{f['name']}.png").is_file()
    ]
    if not pages:
        return '<span class="quiet">report not built yet</span>'

    def link(f: str, label: str) -> str:
        return f'<a href="{html.escape(quote(os.path.relpath(report / f, here)))}">{html.escape(label)}</a>'

    return " · ".join(link(*p) for p in pages) + (
        "<br>figures: " + ", ".join(link(*f) for f in figures) if figures else ""
    )


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ssmpipe — reproducing the four papers</title>
<style>
{style}table.page {{ border-collapse: collapse; font-size: 0.9em; width: 100%; }}
table.page td, table.page th {{ padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: left;
  vertical-align: top; }}
table.page th {{ background: #f3f3f3; }}
.scroll {{ overflow-x: auto; }}
.ref {{ background: #f6f8fa; border-left: 3px solid #8a99ad; padding: 0.4em 0.8em; }}
.quiet {{ color: #666; }}
td.v {{ white-space: nowrap; }} th.w1 {{ width: 13%; }} th.w2 {{ width: 17%; }} th.w3 {{ width: 52%; }}
h3 {{ font-size: 1.05em; margin-top: 1.8em; }}
</style></head><body>
<h1>Reproducing the four papers</h1>
<p>Experiments: {sweeps}. Built from each experiment's <code>runs.parquet</code> and config snapshot alone;
each row links to the experiment's report and its figures.</p>
{summary}
{glance}
{sections}
</body></html>
"""
