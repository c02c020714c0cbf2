"""Bad input is stopped before any job with one clear line (issue 11, section 3).

Each case sets up a tmp folder (config, data files, a damaged sweep folder), runs the real
CLI there in a subprocess, and asserts: a non-zero exit; stderr's last line is the only
`ssmpipe:` line and names the key, value or file; no traceback; no file created or changed.
A few also go through the real Snakemake, which must stop before any job. A sweep whose runs
all failed or diverged gets a report page that says so.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import snakemake, tiny_config, write_config

from ssmpipe import cli
from ssmpipe import config as cfg

NAN, INF = float("nan"), float("inf")


def ssmpipe(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssmpipe", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def tree(folder: Path) -> dict:
    """Every path under folder -> (size, mtime), links not followed: what a command must leave as it was."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            st = os.lstat(Path(root, name))
            out[str(Path(root, name).relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def validate(tmp: Path, config: dict) -> list[str]:
    write_config(tmp, config, "cfg.yaml")
    return ["validate", "cfg.yaml"]


def npz_task(**changes) -> dict:
    """The tiny sweep on tok.npz (seq_len 16 and 24, vocab 4)."""
    return tiny_config(**{"fixed.task": {"name": "npz", "path": "tok.npz", "vocab": 4}, **changes})


def arrays(length=24, **changes) -> dict:
    """A good npz data set: int tokens and targets in [0, 4), (n length); changes replace arrays (None: drop)."""
    rng = np.random.default_rng(0)
    out = {
        k: rng.integers(0, 4, (n, length))
        for k, n in (("x_train", 64), ("y_train", 64), ("x_test", 32), ("y_test", 32))
    }
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def with_npz(data: dict | bytes, **config_changes):
    def setup(tmp):
        if isinstance(data, bytes):
            (tmp / "tok.npz").write_bytes(data)
        else:
            np.savez(tmp / "tok.npz", **data)
        return validate(tmp, npz_task(**config_changes))

    return setup


def changed(array: np.ndarray, where, value) -> np.ndarray:
    out = array.copy()
    out[where] = value
    return out


class Unpickled:
    """An object whose unpickling would create a file: loading it would run code."""

    def __reduce__(self):
        return os.system, ("touch PWNED",)


def pickled_npz(tmp):
    np.savez(tmp / "tok.npz", **arrays(x_train=np.array([Unpickled()], dtype=object)))
    return validate(tmp, npz_task())


def npy_not_npz(tmp):
    with open(tmp / "tok.npz", "wb") as f:
        np.save(f, arrays()["x_train"])
    return validate(tmp, npz_task())


def truncated_npz(tmp):
    np.savez(tmp / "full.npz", **arrays())
    (tmp / "tok.npz").write_bytes((tmp / "full.npz").read_bytes()[:600])
    return validate(tmp, npz_task())


def file_at(name: str, results: str):
    def setup(tmp):
        (tmp / name).write_text("a file where the store's folder should be")
        return validate(tmp, tiny_config(results=results))

    return setup


def broken_link(tmp):
    os.symlink("gone", tmp / "link")
    return validate(tmp, tiny_config(results="link"))


def listops_without_header(tmp):
    (tmp / "lra").mkdir()
    (tmp / "lra" / "basic_train.tsv").write_text("( [MAX 2 9 ] )\t9\n")
    (tmp / "lra" / "basic_test.tsv").write_text("Source\tTarget\n( [MAX 2 9 ] )\t9\n")
    return validate(tmp, tiny_config(**{"fixed.task": {"name": "listops", "path": "lra"}}))


def imdb_parquet(content):
    def setup(tmp):
        (tmp / "imdb").mkdir()
        for split in ("train", "test"):
            pq.write_table(pa.table({"text": ["good", "bad"], "label": [1, 0]}), tmp / "imdb" / f"{split}.parquet")
        if isinstance(content, bytes):
            (tmp / "imdb" / "train.parquet").write_bytes(content)
        else:
            pq.write_table(pa.table(content), tmp / "imdb" / "train.parquet")
        return validate(tmp, tiny_config(**{"fixed.task": {"name": "imdb", "path": "imdb", "vocab": 8}}))

    return setup


def tuned(**tune):
    return lambda tmp: validate(tmp, {**tiny_config(), "tune": {"space": {"train.lr": {"choice": [0.01]}}, **tune}})


def raw(text: str | bytes, name="cfg.yaml"):
    def setup(tmp):
        (tmp / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["validate", name]

    return setup


def sweep_folder(tmp, runs: bytes | pd.DataFrame | None = None, config: str | None = None, **files: str) -> None:
    """results/tiny/ as the workflow leaves it, some of it damaged."""
    folder = tmp / "results" / "tiny"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(config if config is not None else yaml.safe_dump(cfg.check(tiny_config())))
    if isinstance(runs, bytes):
        (folder / "runs.parquet").write_bytes(runs)
    elif runs is not None:
        runs.to_parquet(folder / "runs.parquet")
    for name, text in files.items():
        (folder / name.replace("_", ".")).write_text(text)


TABLE = pd.DataFrame(
    {"run_id": ["a"], "epoch": [0], "status": ["ok"], "error": [None], "train_loss": [1.0], "test_loss": [1.0]}
)


def damaged(command: str, name: str = "tiny", results: str = "results", **damage):
    def setup(tmp):
        sweep_folder(tmp, **damage)
        return [command, "--results", results, name]

    return setup


# name -> (setup(tmp) -> CLI args, words the one line must contain)
CASES = {
    # NaN and infinity, anywhere
    "YAML .nan in fixed": (
        lambda t: validate(t, tiny_config(**{"fixed.model.init.real": NAN})),
        ["fixed.model.init.real = nan", "not a finite number"],
    ),
    "YAML .inf learning rate": (
        lambda t: validate(t, tiny_config(**{"fixed.train.lr": INF})),
        ["fixed.train.lr = inf", "not a finite number"],
    ),
    "-.inf in a grid list": (
        lambda t: validate(t, tiny_config(**{"grid.model.init.real": [-0.5, -INF]})),
        ["grid.model.init.real[1] = -inf"],
    ),
    "exponent string 1e999 (inf)": (
        lambda t: validate(t, tiny_config(**{"fixed.train.lr": "1e999"})),
        ["fixed.train.lr = '1e999'", "not a finite number"],
    ),
    "infinite slurm memory": (lambda t: validate(t, tiny_config(slurm={"mem_gb": INF})), ["slurm.mem_gb = inf"]),
    "NaN in a tune range": (
        tuned(space={"train.lr": {"uniform": [0.001, NAN]}}),
        ["tune.space.train.lr.uniform[1] = nan"],
    ),
    "NaN in a scale not chosen": (
        lambda t: validate(t, {**tiny_config(), "scales": {"small": {}, "paper": {"fixed": {"train": {"lr": NAN}}}}}),
        ["scales.paper.fixed.train.lr = nan"],
    ),
    "string 'nan' as a number": (
        lambda t: validate(t, tiny_config(**{"fixed.train.lr": "nan"})),
        ["fixed.train.lr = 'nan'", "not of type 'number'"],
    ),
    "string 'inf' in a grid": (
        lambda t: validate(t, tiny_config(**{"grid.model.init.imag": [1.0, "inf"]})),
        ["grid.model.init.imag[1] = 'inf'"],
    ),
    # the results root
    "results is a file": (file_at("occupied", "occupied"), ["results = 'occupied'", "a file, not a folder"]),
    "results under a file": (
        file_at("occupied", "occupied/results"),
        ["results = 'occupied/results'", "occupied' is a file"],
    ),
    "results is a broken link": (broken_link, ["results = 'link'", "broken symbolic link", "'gone'"]),
    "results is empty": (lambda t: validate(t, tiny_config(results="")), ["results = ''"]),
    # npz files
    "npz without y_test": (with_npz(arrays(y_test=None)), ["task.path = 'tok.npz'", "no array y_test"]),
    "npz of rank 3": (with_npz(arrays(x_train=np.zeros((64, 24, 2), int))), ["x_train has shape (64, 24, 2)"]),
    "npz float tokens": (
        with_npz(arrays(x_train=np.zeros((64, 24), np.float32))),
        ["tok.npz", "x_train holds float32", "integers"],
    ),
    "npz label outside vocab": (
        with_npz(arrays(y_test=changed(arrays()["y_test"], (3, 5), 7))),
        ["tok.npz", "y_test holds 7", "vocab = 4"],
    ),
    "npz negative token": (
        with_npz(arrays(x_test=changed(arrays()["x_test"], (0, 0), -1))),
        ["tok.npz", "x_test holds -1"],
    ),
    "npz shorter than seq_len": (
        with_npz(arrays(length=20)),
        ["grid.seq_len[1]", "tok.npz", "20 steps", "seq_len = 24"],
    ),
    "npz object array (pickle)": (pickled_npz, ["tok.npz", "x_train", "Python objects", "never loads"]),
    "npz of garbage bytes": (with_npz(b"not an npz file"), ["tok.npz", "not a readable .npz file", "neither a zip"]),
    "npz truncated": (truncated_npz, ["tok.npz", "not a readable .npz file", "BadZipFile"]),
    "npy instead of npz": (npy_not_npz, ["tok.npz", "single .npy array"]),
    "npz x and y lengths differ": (
        with_npz(arrays(y_train=np.zeros((60, 24), int))),
        ["x_train has 64 sequences but y_train has 60"],
    ),
    "npz empty split": (
        with_npz(arrays(x_test=np.zeros((0, 24), int), y_test=np.zeros((0, 24), int))),
        ["x_test holds no sequences"],
    ),
    "npz path is a folder": (
        lambda t: (t / "tok.npz").mkdir() or validate(t, npz_task()),
        ["task.path = 'tok.npz'", "a folder"],
    ),
    "listops file without header": (
        listops_without_header,
        ["task.path = 'lra'", "basic_train.tsv", "Source<TAB>Target"],
    ),
    "imdb parquet without labels": (
        imdb_parquet({"text": ["x"], "stars": [3]}),
        ["task.path = 'imdb'", "train.parquet", "text and label"],
    ),
    "imdb parquet of garbage": (imdb_parquet(b"PAR1 but not really"), ["train.parquet", "not a readable Parquet"]),
    # names
    "sweep named store": (lambda t: validate(t, tiny_config(sweep="store")), ["sweep = 'store'", "reserved"]),
    "sweep named data": (lambda t: validate(t, tiny_config(sweep="data")), ["sweep = 'data'", "reserved"]),
    "sweep named papers": (lambda t: validate(t, tiny_config(sweep="papers")), ["sweep = 'papers'", "reserved"]),
    "sweep named Store": (lambda t: validate(t, tiny_config(sweep="Store")), ["sweep = 'Store'", "reserved"]),
    "sweep named ..": (lambda t: validate(t, tiny_config(sweep="..")), ["sweep = '..'", "does not match"]),
    "hidden sweep name": (lambda t: validate(t, tiny_config(sweep=".hidden")), ["sweep = '.hidden'"]),
    "sweep name too long": (lambda t: validate(t, tiny_config(sweep="s" * 300)), ["sweep = 'sss", "too long"]),
    "study named store": (tuned(study="store"), ["tune.study = 'store'", "reserved"]),
    "study named as the sweep": (tuned(study="tiny"), ["tune.study = 'tiny'", "sweep's own name"]),
    "study escaping": (tuned(study="../x"), ["tune.study = '../x'"]),
    # grid size
    "grid of 500,000 points": (
        lambda t: validate(
            t,
            tiny_config(
                **{
                    "grid.seed": list(range(100)),
                    "grid.model.init.real": [-i / 50 for i in range(50)],
                    "grid.model.init.imag": [i / 10 for i in range(50)],
                }
            ),
        ),
        ["500,000 points", "100 seed", "max_points = 200,000", "max_points: 500000"],
    ),
    "grid above a lowered max_points": (
        lambda t: validate(t, tiny_config(max_points=4)),
        ["8 points", "max_points = 4"],
    ),
    "max_points zero": (lambda t: validate(t, tiny_config(max_points=0)), ["max_points = 0"]),
    # the tune space
    "tune loguniform from 0": (
        tuned(space={"train.lr": {"loguniform": [0, 0.1]}}),
        ["tune.space.train.lr.loguniform", "low must be > 0"],
    ),
    "tune grace period too long": (tuned(grace_period=8), ["tune.grace_period = 8", "2 epochs"]),
    # the config file itself
    "config not YAML": (raw("sweep: [unclosed\n"), ["'cfg.yaml'", "not valid YAML", "line 2"]),
    "config binary": (raw(bytes(range(256))), ["'cfg.yaml'", "not a text"]),
    "config a list": (raw("- sweep\n- tiny\n"), ["'cfg.yaml'", "mapping", "list"]),
    "config empty": (raw(""), ["'cfg.yaml'", "empty"]),
    "config missing": (lambda t: ["validate", "missing.yaml"], ["'missing.yaml'", "does not exist"]),
    "config is a folder": (lambda t: (t / "conf").mkdir() or ["validate", "conf"], ["'conf'", "is a folder"]),
    # reports and tables
    "report of an unknown sweep": (
        damaged("report", "nope", runs=TABLE),
        ["no sweep 'nope' under 'results'", "there: tiny"],
    ),
    "report without results": (damaged("report", results="nowhere"), ["--results 'nowhere'", "no such folder"]),
    "report of garbage runs.parquet": (
        damaged("report", runs=b"garbage"),
        ["results/tiny/runs.parquet", "not a Parquet table"],
    ),
    "report without runs.parquet": (damaged("report"), ["results/tiny/runs.parquet", "has no table yet"]),
    "report of another table": (
        damaged("report", runs=pd.DataFrame({"a": [1]})),
        ["runs.parquet", "not a sweep's table", "run_id"],
    ),
    "report of a corrupt config.yaml": (
        damaged("report", runs=TABLE, config="report: [\n"),
        ["results/tiny/config.yaml", "not a YAML config"],
    ),
    "report of a corrupt study.json": (
        damaged("report", runs=TABLE, study_json="{"),
        ["results/tiny/study.json", "not a study summary"],
    ),
    "report of the store": (damaged("report", "store"), ["sweep = 'store'", "store/ folder is the store's"]),
    "aggregate of an unknown sweep": (damaged("aggregate", "nope", points_json="{}"), ["no sweep 'nope'", "tiny"]),
    "aggregate of a corrupt points.json": (
        damaged("aggregate", points_json="{"),
        ["results/tiny/points.json", "not JSON"],
    ),
    "points.json naming a shard outside the store": (
        damaged("aggregate", points_json='{"points": [{"run_id": "ab", "shard": "../../../etc/passwd"}]}'),
        ["results/tiny/points.json", "not JSON of a sweep's points", "../../../etc/passwd"],
    ),
    "points.json with a list for a shard": (
        damaged("aggregate", points_json='{"points": [{"run_id": "ab", "shard": ["x"]}]}'),
        ["results/tiny/points.json", "does not name a run and a shard"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_touches_nothing(tmp_path, name):
    setup, words = CASES[name]
    args = setup(tmp_path)
    before = tree(tmp_path)
    proc = ssmpipe(tmp_path, *args)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and lines, proc.stderr
    assert lines[-1].startswith("ssmpipe: ") and sum(line.startswith("ssmpipe:") for line in lines) == 1, lines
    for word in words:
        assert word in lines[-1], f"{word!r} not in {lines[-1]!r}"
    assert tree(tmp_path) == before  # nothing created (no results/, no PWNED), nothing changed


@pytest.mark.parametrize("name", list(CASES))
def test_each_case_in_process_says_the_same_line(tmp_path, name, monkeypatch, capsys):
    """The cases above, run by the CLI's main in this process rather than a subprocess (as .ci/mutation's tests must
    be, to see a changed check): the same exit, the same one line, nothing written."""
    setup, words = CASES[name]
    args = setup(tmp_path)
    before = tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("ssmpipe: ") and all(word in line for word in words), line
    assert tree(tmp_path) == before


def test_a_results_folder_that_is_not_writable():
    """Permission bits do not stop root: as root, the check runs as user nobody (setpriv), in a folder it may read."""
    folder = Path(tempfile.mkdtemp(prefix="ssmpipe-ro-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        (folder / "ro").mkdir(mode=0o555)
        (folder / "ro").chmod(0o555)
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        write_config(folder, tiny_config(results="ro/results"), "cfg.yaml").chmod(0o644)
        proc = subprocess.run(
            [*as_user, sys.executable, "-m", "ssmpipe", "validate", "cfg.yaml"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "results = 'ro/results'" in proc.stderr and "is not writable" in proc.stderr
        assert list((folder / "ro").iterdir()) == []
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize(
    "name, setup",
    [
        ("a good npz file", with_npz(arrays())),
        (
            "an npz with ignored targets and longer sequences",
            with_npz(arrays(length=40, y_train=changed(arrays(length=40)["y_train"], (slice(None), 0), -100))),
        ),
        ("a results folder still to be made", lambda t: validate(t, tiny_config(results="new/deeper/results"))),
        ("a grid at its max_points", lambda t: validate(t, tiny_config(max_points=8))),
        ("a tune study", tuned(study="tiny-study")),
    ],
)
def test_good_inputs_pass(tmp_path, name, setup):
    """The checks above refuse only what is wrong: the same inputs, made right, validate."""
    proc = ssmpipe(tmp_path, *setup(tmp_path))
    assert proc.returncode == 0 and "valid. sweep 'tiny': 8 points" in proc.stdout, proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "new").exists()


def test_npz_load_refuses_what_the_check_refuses(tmp_path):
    """A file changed after the check is refused again when a job loads it, naming the file."""
    from ssmpipe.data import npz

    np.savez(tmp_path / "tok.npz", **arrays(x_train=np.zeros((64, 24), np.float64)))
    with pytest.raises(ValueError, match="tok.npz.*x_train holds float64"):
        npz.load({"path": str(tmp_path / "tok.npz"), "vocab": 4}, 16)
    np.savez(tmp_path / "tok.npz", **arrays())
    got = npz.load({"path": str(tmp_path / "tok.npz"), "vocab": 4}, 16)
    assert {k: v.shape for k, v in got.items()} == {
        "x_train": (64, 16),
        "y_train": (64, 16),
        "x_test": (32, 16),
        "y_test": (32, 16),
    }


# --- a sweep whose runs all failed or diverged ------------------------------------------------


def failed_sweep(tmp: Path, statuses: list[str]) -> None:
    """results/tiny/ holding a table of 8 runs, statuses in turn, as the workflow would leave it."""
    from ssmpipe import manifest, sweep
    from ssmpipe.runs import rows_to_table
    from ssmpipe.store import Store

    config = cfg.check(tiny_config(results=str(tmp / "results")))
    plan = sweep.plan(config, write=False)
    manifest.write_manifest(Store(config["results"]), config, plan)
    rows = [
        {
            "run_id": p.run_id,
            "shard_id": plan.shard_of[p.run_id],
            "settings": p.settings,
            "epoch": epoch,
            "status": statuses[i % len(statuses)],
            "train_loss": NAN if epoch else 1.0,
            "test_loss": NAN,
            "error": f"RuntimeError: boom {i}\nsecond line" if statuses[i % len(statuses)] == "failed" else None,
        }
        for i, p in enumerate(sorted(plan.points, key=lambda p: p.run_id))
        for epoch in (0, 1)
    ]
    table = rows_to_table(rows)
    pq.write_table(
        table.append_column("sweep", pa.array(["tiny"] * table.num_rows)), tmp / "results" / "tiny" / "runs.parquet"
    )


@pytest.mark.parametrize(
    "statuses, line",
    [
        (["failed"], "All 8 runs failed; first error: RuntimeError: boom 0 second line"),
        (["diverged"], "All 8 runs diverged: nothing to plot."),
        (
            ["diverged", "failed"],
            "All 8 runs diverged or failed (4 diverged, 4 failed); first error: RuntimeError: boom 1",
        ),
    ],
)
def test_report_of_a_sweep_with_no_run_ok_says_so(tmp_path, statuses, line):
    failed_sweep(tmp_path, statuses)
    proc = ssmpipe(tmp_path, "report", "--results", "results", "tiny")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    report = tmp_path / "results" / "tiny" / "report"
    for page in ("index.html", "length.html", "tradeoff.html"):
        assert line in (report / page).read_text()
    for stem in ("lengthgen", "tradeoff", "curves"):  # the report rule's outputs: each says the same in its image
        assert (report / "figures" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
    assert "<h2>Runs</h2>" in (report / "index.html").read_text()  # the counts and each run's error follow


# --- through the real workflow: refused at parse time, before any job or file -------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["-.inf in a grid list", "npz float tokens", "results is a file", "tune loguniform from 0"]
)
def test_snakemake_stops_before_any_job(tmp_path, name):
    setup, words = CASES[name]
    setup(tmp_path)
    before = tree(tmp_path)
    proc = snakemake(tmp_path, tmp_path / "cfg.yaml", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Job stats" not in out and "rule " not in out, out
    for word in words:
        assert word in out, f"{word!r} not in {out}"
    after = {k: v for k, v in tree(tmp_path).items() if not k.startswith(".snakemake")}
    assert after == before  # no results/ folder, no spec, nothing changed


@pytest.mark.parametrize(
    "text, said",
    [
        (
            "sweep: x\nfixed: [1, 2\n",
            "is not valid YAML: expected ',' or ']', but got '<stream end>' at line 3, column 1",
        ),
        (
            "__use_yte__: true\nsweep: x\n",
            ": __use_yte__ = True: Snakemake's YAML templating runs code from the file; an ssmpipe config is plain "
            "data (remove the key)",
        ),
    ],
    ids=["broken", "template"],
)
def test_a_config_file_that_is_not_plain_yaml_data_is_one_error_naming_it(tmp_path, text, said):
    """cfg.read, in this process: YAML that does not parse names its problem and where; a template is refused."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(cfg.ConfigError) as e:
        cfg.read(path)
    assert str(e.value) == f"config file {str(path)!r}{'' if said.startswith(':') else ' '}{said}"
