"""The store's checks called in-process: each reason a spec or a runs file is refused, as the user reads it, and
what a repair moves to store/quarantine/ (the same faults end to end, through Snakemake: test_store_trust.py)."""

import copy
import logging
import os
import re

import pyarrow.parquet as pq
import pytest
from conftest import runs_rows, tiny_config

from ssmpipe import config as cfg
from ssmpipe import store, sweep
from ssmpipe.runs import rows_to_table


def quarantined(folder: str, name: str) -> re.Pattern:
    """The name a file gets in store/quarantine/: <time>-<pid>-<its folder>-<its name>."""
    return re.compile(rf"\d{{8}}T\d{{6}}-{os.getpid()}-{folder}-{re.escape(name)}")


@pytest.fixture
def planned(tmp_path):
    """A planned tiny sweep (specs written, nothing trained): its store, first shard, and that shard's points."""
    plan = sweep.plan(cfg.check(tiny_config(results=str(tmp_path), shard_size=4)))
    shard = sorted(plan.shards)[0]
    return store.Store(tmp_path), shard, [p for p in plan.points if plan.shard_of[p.run_id] == shard]


def test_each_way_a_spec_can_be_wrong_has_its_own_reason(planned):
    st, shard, points = planned
    spec = st.read_spec(shard)
    ids = [p["run_id"] for p in spec["points"]]
    assert st.spec_problem(shard) == (None, dict.fromkeys(ids, 2))  # read from its file: each run's epochs
    assert st.spec_problem(shard, spec=spec) == (None, dict.fromkeys(ids, 2))

    def problem(edit, name=shard, **kwargs) -> str | None:
        edited = copy.deepcopy(spec)
        edit(edited)
        return st.spec_problem(name, spec=edited, **kwargs)[0]  # the spec given, not the file's

    assert problem(lambda s: s.update(shard="other")) == "it names shard 'other'"
    assert problem(lambda s: s.update(points=[])) == "it holds no points"
    assert problem(lambda s: s["points"].pop()) == "its run ids do not hash to its name (edited by hand?)"
    tune = f"tune-{shard[:8]}"  # a trial's shard is named by its trial, not by the hash of its run ids
    assert problem(lambda s: s.update(shard=tune), name=tune) is None

    def edit_lr(s):
        s["points"][0]["settings"]["train"]["lr"] = 0.5

    assert problem(edit_lr) == f"the settings of run {ids[0]} do not hash to its id (edited by hand?)"
    edited = copy.deepcopy(spec["points"][0]["settings"])
    edited["train"]["lr"] = 0.5
    assert problem(edit_lr, known={ids[0]: edited}) is None  # settings hashed already (the plan's) are not again
    assert problem(edit_lr, known={ids[1]: edited}) is not None
    assert problem(lambda s: s.update(points=[1])).startswith("not a shard spec (TypeError: ")
    assert problem(lambda s: s.pop("shard")) == "not a shard spec (KeyError: 'shard')"
    assert st.spec_problem("0" * 16) == ("unreadable (No such file or directory)", [])


def test_each_way_a_runs_file_can_be_wrong_has_its_own_reason(planned):
    st, shard, points = planned
    ids = [p.run_id for p in points]
    path = st.runs_path(shard)
    assert st.runs_problem(shard, dict.fromkeys(ids, 2)).startswith("unreadable (FileNotFoundError: ")
    path.parent.mkdir(parents=True)
    pq.write_table(rows_to_table(runs_rows(points, epochs=0)), path)  # every run at epoch 0 of 2, still ok
    assert (
        st.runs_problem(shard, dict.fromkeys(ids, 2))
        == f"run {ids[0]} ends at epoch 0 of 2, still ok (rows missing: truncated?)"
    )
    assert st.runs_problem(shard, ids) is None  # run ids alone: their last epoch unknown, not checked
    assert st.runs_problem(shard, ids[1:]) == "it holds 4 runs, its spec 3 (1 differ)"
    gap = [r for r in runs_rows(points, epochs=9) if r["epoch"] != 0]
    pq.write_table(rows_to_table(gap), path)
    assert st.runs_problem(shard, ids) == f"run {ids[0]} has epochs [1, 2, 3, 4, 5, 6]…, not 0, 1, …"
    path.write_bytes(b"PAR1 not parquet")
    assert st.runs_problem(shard, ids).startswith("not a runs table (ArrowInvalid: ")


def test_a_check_without_repair_warns_and_moves_nothing(planned, caplog):
    st, shard, points = planned
    spec_path = st.spec_path(shard)
    good = spec_path.read_text()
    spec_path.write_text(good.replace(points[0].run_id, "0" * 16))
    with caplog.at_level(logging.WARNING, logger="ssmpipe.store"):
        got = st.trusted_all([(shard, None)], repair=False)
    assert got == {shard: (None, False)}
    assert caplog.messages == [
        f"ssmpipe: {spec_path} cannot be trusted: its run ids do not hash to its name (edited by hand?)"
    ]
    assert spec_path.exists() and not st.quarantine_dir().exists()
    spec_path.write_text(good)  # a spec given is checked, not the file's
    edited = st.read_spec(shard)
    edited["shard"] = "other"
    assert st.trusted_all([(shard, edited)], repair=False) == {shard: (None, False)}
    assert st.trusted(shard, repair=False) == (
        dict.fromkeys([p.run_id for p in points], 2),
        False,
    )  # nothing stored yet


def test_a_repair_quarantines_an_untrusted_spec_with_its_rows_and_checkpoint(planned, caplog):
    st, shard, points = planned
    st.write_runs(shard, [{**r, "shard_id": shard} for r in runs_rows(points)])
    st.ckpt_path(shard).parent.mkdir(parents=True, exist_ok=True)
    st.ckpt_path(shard).write_bytes(b"a checkpoint")
    assert st.trusted(shard, repair=True) == (dict.fromkeys([p.run_id for p in points], 2), True)
    st.spec_path(shard).write_text(st.spec_path(shard).read_text().replace('"lr": 0.01', '"lr": 0.5', 1))
    why = f"the settings of run {st.read_spec(shard)['points'][0]['run_id']} do not hash to its id (edited by hand?)"
    with caplog.at_level(logging.WARNING, logger="ssmpipe.store"):
        assert st.trusted(shard, repair=True) == (None, False)
    moved = sorted(p.name for p in st.quarantine_dir().iterdir())
    for path, folder in ((st.spec_path(shard), "specs"), (st.runs_path(shard), "runs"), (st.ckpt_path(shard), "ckpt")):
        assert not path.exists()
        [name] = [m for m in moved if quarantined(folder, path.name).fullmatch(m)]
        reason = why if folder == "specs" else f"its spec {why}"
        dest = st.quarantine_dir() / name
        assert (
            f"ssmpipe: {path} cannot be trusted: {reason}; moved to {dest} (its shard trains again)" in caplog.messages
        )
    assert len(moved) == 3


def test_a_repair_quarantines_an_untrusted_runs_file_alone(planned, caplog):
    st, shard, points = planned
    st.write_runs(shard, [{**r, "shard_id": shard} for r in runs_rows(points[:3])])  # a run missing
    with caplog.at_level(logging.WARNING, logger="ssmpipe.store"):
        assert st.trusted(shard, repair=True) == (dict.fromkeys([p.run_id for p in points], 2), False)
    [moved] = st.quarantine_dir().iterdir()
    assert quarantined("runs", f"{shard}.parquet").fullmatch(moved.name)
    assert st.spec_path(shard).exists() and not st.runs_path(shard).exists()
    assert caplog.messages == [
        f"ssmpipe: {st.runs_path(shard)} cannot be trusted: it holds 3 runs, its spec 4 (1 differ); "
        f"moved to {moved} (its shard trains again)"
    ]


def test_quarantine_makes_its_folder_keeps_every_file_and_skips_one_already_gone(tmp_path):
    st = store.Store(tmp_path / "fresh" / "results")  # no store/ folder yet
    files = [tmp_path / name for name in ("a.json", "b.json")]
    for f in files:
        f.write_text(f.name)
    dests = [st.quarantine(f, "a test", then="kept") for f in files]
    assert [d.read_text() for d in dests] == ["a.json", "b.json"] and all(
        d.parent == st.quarantine_dir() for d in dests
    )
    assert st.quarantine(files[0], "a test") is None  # moved already (by another process, say)


def test_files_set_aside_twice_in_one_second_are_both_kept(tmp_path):
    """Two files of one name quarantined (or kept) within the same second get two names: neither is overwritten."""
    st = store.Store(tmp_path)
    path = st.runs_path("s")
    path.parent.mkdir(parents=True)
    moved = []
    for text in ("first", "second", "third"):
        path.write_text(text)
        moved.append(st.quarantine(path, "test") if text != "third" else st.keep(path, "test"))
    assert [p.read_text() for p in moved] == ["first", "second", "third"] and path.read_text() == "third"
    assert len(set(moved)) == 3 and len(list(st.quarantine_dir().iterdir())) == 3


def test_each_shard_has_its_own_lock(tmp_path):
    """Two shards train at once (one lock each); a second holder of one shard's lock waits."""
    import filelock

    st = store.Store(tmp_path)
    with st.shard_lock("a"):
        with st.shard_lock("b"):  # another shard: free
            pass
        other = filelock.FileLock(st.lock_path("a"))  # another process's view (its own FileLock object)
        with pytest.raises(filelock.Timeout):
            other.acquire(timeout=0)


def test_runs_files_read_together_count_each_runs_epochs(tmp_path):
    """The batch read behind runs_problems (a damaged file sends it back to one file at a time, which names it)."""
    points = sweep.expand(cfg.check(tiny_config()))[:3]
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(rows_to_table(runs_rows(points[:2], epochs=2)), a)
    pq.write_table(rows_to_table(runs_rows(points[2:], epochs=4)[1:]), b)  # epochs 1..4: epoch 0 missing
    counts = store._epoch_counts([str(a), str(b)])
    assert counts == {
        str(a): {p.run_id: (3, 0, 2, 3) for p in points[:2]},
        str(b): {points[2].run_id: (4, 1, 4, 4)},
    }
    assert store._epoch_counts([]) == {}
