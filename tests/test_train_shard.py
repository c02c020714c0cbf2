"""train_shard in this process, each way a shard's training can end that is not the machine's clean finish: a
checkpoint that does not fit its model, an I/O error while training or while writing the rows, a tidy-up that fails
after the rows are stored. (The same faults end to end, through Snakemake and the CLI: test_store_trust.py,
test_hostile_inputs.py; here, so that .ci/mutation's tests see the code that handles them.)"""

import errno
import logging

import pandas as pd
import pytest
import torch
from test_device import METRICS, one_shard, shard_rows, train_until, trained_and_stopped

from ssmpipe import train
from ssmpipe.atomic import stamp
from ssmpipe.checkpoint import load_state
from ssmpipe.keys import pack_key
from ssmpipe.store import Store


def test_a_checkpoint_that_does_not_fit_is_quarantined_and_the_shard_trains_from_scratch(tmp_path, monkeypatch, caplog):
    ref, run, shard, ckpt = trained_and_stopped(tmp_path, monkeypatch)
    state = load_state(ckpt)
    name = sorted(state["current"]["params"])[0]
    state["current"]["params"][name] = torch.zeros(3, 1)  # loads as plain tensors, but not the model's shape
    torch.save(state, ckpt)
    with caplog.at_level(logging.WARNING, logger="ssmpipe.store"):
        train.train_shard(str(run), shard, "cpu")
    [moved] = Store(run).quarantine_dir().iterdir()
    [line] = [m for m in caplog.messages if str(ckpt) in m]
    assert line.startswith(f"ssmpipe: {ckpt} cannot be trusted: it does not fit the shard's model (ValueError: {name}")
    assert line.endswith(f"; moved to {moved} (its shard trains from scratch)")
    pd.testing.assert_frame_equal(shard_rows(run, shard)[METRICS], shard_rows(ref, shard)[METRICS], check_exact=True)


def test_an_io_error_while_training_fails_the_job_keeps_the_checkpoint_and_stores_nothing(tmp_path, monkeypatch):
    shard = one_shard(tmp_path)
    store = Store(tmp_path)
    full = OSError(errno.ENOSPC, "No space left on device")

    def no_data(*args):
        raise full

    monkeypatch.setattr(train, "length_data", no_data)
    with pytest.raises(train.TrainIOError) as e:
        train.train_shard(str(tmp_path), shard, "cpu")
    assert str(e.value) == (
        f"shard {shard}: I/O error while training ({full}); nothing of it is stored as failed, its checkpoint "
        f"{store.ckpt_path(shard)} was not written: rerun to continue"
    )
    assert not store.runs_path(shard).exists()
    monkeypatch.undo()
    ckpt = train_until(tmp_path, shard, 2, monkeypatch)
    monkeypatch.setattr(train, "length_data", no_data)
    with pytest.raises(train.TrainIOError) as e:
        train.train_shard(str(tmp_path), shard, "cpu")
    assert f"its checkpoint {ckpt} is kept: rerun to continue" in str(e.value) and ckpt.exists()


def test_an_io_error_writing_the_rows_keeps_the_checkpoint(tmp_path, monkeypatch):
    shard = one_shard(tmp_path)
    store = Store(tmp_path)
    full = OSError(errno.ENOSPC, "No space left on device")

    def no_room(store, shard, rows):
        raise full

    monkeypatch.setattr(train.Store, "write_runs", no_room)
    with pytest.raises(train.TrainIOError) as e:
        train.train_shard(str(tmp_path), shard, "cpu")
    ckpt = store.ckpt_path(shard)
    assert str(e.value) == (
        f"shard {shard}: I/O error writing its rows ({full}); its checkpoint {ckpt} is kept: rerun to continue"
    )
    assert ckpt.exists() and not store.runs_path(shard).exists()
    monkeypatch.undo()
    assert train.train_shard(str(tmp_path), shard, "cpu") == 4 * 5  # from the finished checkpoint: no training


def test_a_tidy_up_that_fails_after_the_rows_are_stored_is_a_warning(tmp_path, monkeypatch, caplog):
    shard = one_shard(tmp_path)
    store = Store(tmp_path)
    real_unlink = type(store.ckpt_path(shard)).unlink

    def unlink(path, missing_ok=False):
        if path == store.ckpt_path(shard):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(type(store.ckpt_path(shard)), "unlink", unlink)
    with caplog.at_level(logging.WARNING, logger="ssmpipe.train"):
        assert train.train_shard(str(tmp_path), shard, "cpu") == 4 * 5
    assert store.runs_path(shard).exists()
    assert (
        f"shard {shard}: rows stored, but {store.ckpt_path(shard)} could not be removed (Permission denied)"
        in caplog.messages
    )


def test_a_shard_trained_again_keeps_its_old_rows_until_the_new_ones_replace_them(tmp_path, monkeypatch, caplog):
    """train_shard(replace=the stamp of the stored rows), as `ssmpipe train --again` (snakemake -R train): stopped part
    way, the old rows are still stored and trusted and the checkpoint resumes; finished, new rows replace them (a
    copy of the old kept in quarantine); called again with the same stamp (a requeued job), it reuses the new rows."""
    shard = one_shard(tmp_path)
    store = Store(tmp_path)
    runs = store.runs_path(shard)
    train.train_shard(str(tmp_path), shard, "cpu")
    old = pd.read_parquet(runs)
    seen = stamp(runs)
    ckpt = train_until(tmp_path, shard, 2, monkeypatch, replace=seen)
    assert load_state(ckpt)["current"]["epoch"] == 2 and stamp(runs) == seen  # stopped: the old rows untouched
    ids, stored = store.trusted(shard, repair=True)
    assert stored and sorted(ids) == sorted(old["run_id"].unique())
    caplog.set_level(logging.INFO)
    caplog.clear()
    n = train.train_shard(str(tmp_path), shard, "cpu", seen)
    said = [m for m in caplog.messages if shard in m]
    assert said[0] == f"shard {shard}: trains again; its stored rows stay until the new ones replace them"
    assert said[1].startswith(f"shard {shard}: resuming group ") and said[1].endswith(" after epoch 2")
    [kept] = store.quarantine_dir().iterdir()
    assert f"ssmpipe: {runs} is replaced by the shard's new rows (trained again); kept as {kept}" in said
    new = pd.read_parquet(runs)
    assert n == len(new) == len(old) and stamp(runs) != seen and not ckpt.exists()
    pd.testing.assert_frame_equal(pd.read_parquet(kept), old)
    pd.testing.assert_frame_equal(new[METRICS], old[METRICS], check_exact=True)  # the same numbers, trained anew
    assert (new["wall_s"] != old["wall_s"]).any()
    caplog.clear()
    assert train.train_shard(str(tmp_path), shard, "cpu", seen) == n  # the old stamp: the new rows are reused
    assert [m for m in caplog.messages if shard in m] == [
        f"shard {shard}: already trained (by another process), {n} rows reused from {runs}"
    ]
    assert stamp(runs) != seen and len(list(store.quarantine_dir().iterdir())) == 1


def test_a_group_that_fails_part_way_stores_its_epochs_so_far_as_failed_with_the_error(tmp_path, monkeypatch, caplog):
    """An error inside a group (not the machine's: not OSError) fails its runs, not the job: each run keeps the epochs
    it trained, every row marked failed with the error, the log names the group, and the shard is stored and trusted."""
    shard = one_shard(tmp_path)
    store = Store(tmp_path)
    real = train._save

    def save(state, path):
        if state.get("current", {}).get("epoch") == 3:
            raise ValueError("boom at epoch 3")
        real(state, path)

    monkeypatch.setattr(train, "_save", save)
    caplog.set_level(logging.INFO)
    n = train.train_shard(str(tmp_path), shard, "cpu")
    rows = pd.read_parquet(store.runs_path(shard))
    assert n == len(rows) == 4 * 4  # 4 points, epochs 0..3 each
    assert sorted(rows.groupby("run_id")["epoch"].apply(list).map(tuple).unique()) == [(0, 1, 2, 3)]
    assert (rows["status"] == "failed").all() and (rows["error"] == "ValueError: boom at epoch 3").all()
    assert (rows["device"] == "cpu").all() and rows["train_loss"].notna().all()
    [failed] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    group = pack_key(store.read_spec(shard)["points"][0]["settings"])  # the shard's one packed group
    assert failed.startswith(f"shard {shard} group {group} failed:\nTraceback") and "boom at epoch 3" in failed
    assert not store.ckpt_path(shard).exists() and store.trusted(shard, repair=True)[1]  # stored whole, trusted


def test_progress_starts_where_training_starts(tmp_path, monkeypatch):
    """The shard's progress record (what `ssmpipe status` shows) starts at group 0, epoch 0, or where a resume
    picks up."""
    starts = []
    real = train.live.Progress.start
    monkeypatch.setattr(train.live.Progress, "start", lambda self, g=0, e=0: (starts.append((g, e)), real(self, g, e)))
    shard = one_shard(tmp_path)
    train_until(tmp_path, shard, 2, monkeypatch)
    train.train_shard(str(tmp_path), shard, "cpu")
    assert starts == [(0, 0), (0, 2)]


def test_a_runs_file_that_fails_its_check_is_quarantined_by_the_job_and_the_shard_trains(tmp_path, monkeypatch):
    shard = one_shard(tmp_path)
    store = Store(tmp_path)
    store.runs_path(shard).parent.mkdir(parents=True)
    store.runs_path(shard).write_bytes(b"PAR1 not a table")
    ckpt = train_until(tmp_path, shard, 1, monkeypatch)  # stopped while training: its progress record stands
    assert store.progress_path(shard).is_file() and ckpt.is_file()
    [moved] = store.quarantine_dir().iterdir()
    assert moved.read_bytes() == b"PAR1 not a table" and moved.name.endswith(f"-runs-{shard}.parquet")
    train.train_shard(str(tmp_path), shard, "cpu")
    assert store.trusted(shard, repair=False)[1] and not store.progress_path(shard).exists()
