"""Live progress of a shard in training: one small JSON record per shard, rewritten after every epoch.

The training process (`Progress`, called from train.py) writes
<results>/store/progress/<shard>.json atomically when it starts and after each epoch of each
packed group: the group, the epoch reached and the epochs in all, the mean train loss of the
points still training, the mean wall time of an epoch so far in this process and the
seconds left at that pace, its host and pid. The record is deleted once the shard's rows are
stored. It is a hint only: one that cannot be written is warned about once, and training
goes on. `ssmpipe status` reads the records (`read`) and asks whether a shard's lock is
held right now (`lock_held`): held means a process trains it now (the record then says how
far it is); a record or checkpoint with the lock free means it stopped (interrupted).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import socket
import time
from pathlib import Path

from ssmpipe.atomic import write_text
from ssmpipe.inputs import load_json, read_file
from ssmpipe.layout import NAME, Layout

log = logging.getLogger("ssmpipe.progress")


def path(results: str | Path, shard: str) -> Path:
    return Layout(results).progress_path(shard)


class Progress:
    """Writes one shard's progress record; `epochs` lists each packed group's epochs, in training order."""

    def __init__(self, results: str | Path, shard: str, epochs: list[int]):
        self.path, self.shard, self.epochs = path(results, shard), shard, epochs
        self.started = time.time()
        self.mark: tuple[int, int, float] | None = None  # (group, epoch, time) of the last record
        self.epoch_s_sum, self.epochs_timed = 0.0, 0
        self.failed = False  # a write failed (warned once)

    def start(self, group: int = 0, epoch: int = 0) -> None:
        """Training starts (or resumes) at `epoch` of group `group` (0-based)."""
        self._write(group, epoch, math.nan, None)

    def epoch(self, group: int, group_state: dict) -> None:
        """Group `group` (0-based) finished epoch group_state["epoch"] (0: the evaluation at init)."""
        now, epoch = time.time(), group_state["epoch"]
        if self.mark and self.mark[:2] == (group, epoch - 1):  # an epoch trained in this process: time it
            self.epoch_s_sum += now - self.mark[2]
            self.epochs_timed += 1
        self.mark = (group, epoch, now)
        last = []  # the rows of this epoch: the points still training (rows are appended epoch by epoch)
        for row in reversed(group_state["rows"]):
            if row["epoch"] != epoch:
                break
            last.append(row["train_loss"])
        finite = [x for x in last if math.isfinite(x)]
        self._write(group, epoch, sum(finite) / len(finite) if finite else math.nan, len(last))

    def done(self) -> None:
        self.path.unlink(missing_ok=True)

    def _write(self, group: int, epoch: int, train_loss: float, alive: int | None) -> None:
        left = self.epochs[group] - epoch + sum(self.epochs[group + 1 :])  # epochs still to train in the shard
        epoch_s = self.epoch_s_sum / self.epochs_timed if self.epochs_timed else None
        record = {
            "shard": self.shard,
            "group": group + 1,
            "groups": len(self.epochs),
            "epoch": epoch,
            "epochs": self.epochs[group],
            "epochs_left": left,
            "train_loss": train_loss if math.isfinite(train_loss) else None,
            "alive": alive,
            "epoch_s": epoch_s,
            "eta_s": None if epoch_s is None else left * epoch_s,
            "started": self.started,
            "time": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        try:
            write_text(self.path, json.dumps(record))
        except OSError as e:  # a hint only: the checkpoint's own write says whether training can go on
            if not self.failed:
                log.warning("shard %s: progress record %s not written (%s); training goes on", self.shard, self.path, e)
            self.failed = True


# A record's fields and their types (None allowed for the last three): what `read` accepts.
FIELDS = {
    "group": int,
    "groups": int,
    "epoch": int,
    "epochs": int,
    "epochs_left": int,
    "started": float,
    "time": float,
    "host": str,
    "pid": int,
    "train_loss": float,
    "epoch_s": float,
    "eta_s": float,
}
OPTIONAL = ("train_loss", "epoch_s", "eta_s")


def read(results: str | Path, shard: str) -> dict | None:
    """A shard's progress record, or None: none written, unreadable, or not a record (a hint only; its host is
    printed, so it must be a plain host name)."""
    try:
        record = load_json(read_file(path(results, shard)))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if not all(
        _fits(record.get(key), kind) or (key in OPTIONAL and record.get(key) is None) for key, kind in FIELDS.items()
    ):
        return None
    return record if NAME.fullmatch(record["host"]) else None


def _fits(value, kind: type) -> bool:
    if kind is float:  # any finite JSON number
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return type(value) is kind


def lock_held(lock_file: str | Path) -> bool:
    """Whether some process holds this filelock (fcntl.flock) now: a shared lock is refused while it is held.

    Probing takes the free lock for an instant; a trainer starting in that instant waits for it, then trains.
    """
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:  # no lock file: never locked
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
