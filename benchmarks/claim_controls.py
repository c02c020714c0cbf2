"""How often does a claim test say "supported" when the data hold no effect, and how often does it find one?

For every claim (ssmpipe/report/claims.py), over --draws tables of each kind (ssmpipe/report/controls.py):
  * planted      a synthetic table shaped like the claim's experiment, with an effect of realistic size: the
                 detection rate (power);
  * margin       the same table at the null's boundary (no effect; for "flat"/"equal" claims a difference at the
                 margin): the rate of "supported" must stay at about the level (0.05) or below;
  * permuted, at_chance, s_A_unchanged   the no-effect transforms that apply to the claim, of a planted table.
With --results ROOT, the same transforms of each experiment's own runs.parquet (as a reviewer would build no-effect
data from the real tables `make experiments` writes), for each claim its config checks.

Prints one table (claim × kind: rate of "supported", and of "inconclusive") and, last, one JSON object:
{"<claim>": {"<kind>": {"supported": rate, "inconclusive": rate}}, "real:<sweep>:<claim>": {...}, "draws": n}.
Run: .venv/bin/python benchmarks/claim_controls.py --draws 200 [--results results]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ssmpipe.report import controls
from ssmpipe.report.papers import load_experiment

PAPERS = Path(__file__).resolve().parent.parent / "config" / "papers.yaml"


def rates(counts: dict[str, int], draws: int) -> dict[str, float]:
    return {"supported": counts["supported"] / draws, "inconclusive": counts["inconclusive"] / draws}


def real_tables(results: Path, draws: int) -> dict[str, dict]:
    """No-effect transforms of each experiment's own table, for each claim its config lists."""
    import yaml

    out = {}
    for item in yaml.safe_load(PAPERS.read_text())["experiments"]:
        experiment = load_experiment(results, str(PAPERS.parent.parent / item))
        if experiment.runs is None:
            continue
        for claim in experiment.config["report"].get("claims", []):
            rng = np.random.default_rng([1, *claim.encode(), *experiment.sweep.encode()])
            kinds = {}
            for kind in controls.CONTROLS[claim].no_effect:
                counts = dict.fromkeys(("supported", "not supported", "inconclusive", "no data"), 0)
                for _ in range(draws):
                    counts[controls.verdict_on(claim, controls.NO_EFFECT[kind](experiment.runs, rng))] += 1
                kinds[kind] = rates(counts, draws)
            kinds["as measured"] = controls.verdict_on(claim, experiment.runs)
            out[f"real:{experiment.sweep}:{claim}"] = kinds
            print(
                f"{experiment.sweep:24s} {claim:28s} "
                + "  ".join(
                    f"{k} {v['supported']:.2f}/{v['inconclusive']:.2f}" if isinstance(v, dict) else f"{k}: {v}"
                    for k, v in kinds.items()
                ),
                file=sys.stderr,
                flush=True,
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--results", type=Path, help="also transform the real tables of config/papers.yaml here")
    args = parser.parse_args()
    figures = {"draws": args.draws}
    header = f"{'claim':28s} " + " ".join(
        f"{k:>14s}" for k in ("planted", "margin", "permuted", "at_chance", "s_A_unchanged")
    )
    print(header + "   (rate supported / rate inconclusive)", file=sys.stderr)
    for claim in controls.CONTROLS:
        counts = controls.calibrate(claim, args.draws)
        figures[claim] = {kind: rates(c, args.draws) for kind, c in counts.items()}
        cells = [
            f"{figures[claim][k]['supported']:.3f}/{figures[claim][k]['inconclusive']:.2f}"
            if k in figures[claim]
            else "—"
            for k in ("planted", "margin", "permuted", "at_chance", "s_A_unchanged")
        ]
        print(f"{claim:28s} " + " ".join(f"{c:>14s}" for c in cells), file=sys.stderr, flush=True)
    if args.results:
        figures.update(real_tables(args.results, max(1, args.draws // 2)))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
