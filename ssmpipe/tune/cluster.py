"""A study inside a SLURM allocation: one submitit job that starts Ray on its nodes and runs the study.

`ssmpipe tune <config> --cluster slurm` submits `StudyJob` with the config's `slurm:` requests
(`slurm.run`); the same `run_study` as on a workstation trains the trials and writes the same
store files. Several nodes (`slurm.nodes: N`): task 0 starts a Ray head, the others join it
(`Rendezvous`). Requeued before its time limit, the job resumes the study from Ray's state.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import submitit

from ssmpipe import config as cfg
from ssmpipe import slurm
from ssmpipe.errors import ConfigError
from ssmpipe.layout import Layout
from ssmpipe.tune import node_name

log = logging.getLogger("ssmpipe.tune")

HEAD_WAIT_S = 300  # how long a worker task waits for the head's address
GCS_WAIT_S = 120  # how long task 0 waits for its Ray head to listen
STOP_WAIT_S = 30  # how long a Ray node has to stop (SIGTERM) before it is killed
# Ray on the job's nodes: no usage reports, no dashboard (and no network beyond the nodes).
# Nodes and the driver authenticate with a token made for the job (RAY_AUTH_MODE=token,
# RAY_AUTH_TOKEN), passed in the rendezvous file: Ray's default token (~/.ray/auth_token,
# shared by every cluster of the user's home) would not tell this job's nodes from others,
# and with none (RAY_AUTH_MODE=disabled) anyone reaching the head's port could run code as you.
RAY_NODE_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0"}


class StudyJob(submitit.helpers.Checkpointable):
    """What the study's SLURM job runs: `run_study` with Ray on the job's CPUs and GPUs (on each of its nodes).

    One node: Ray starts in the job on the allocation's CPUs (and GPUs) only. N nodes: one task per node,
    each with cpus_per_task CPUs, gpus_per_node GPUs and mem_gb. Task 0 starts a Ray head on its node
    (`ray start --head --block`), announces its address and the cluster's token in the job's private
    folder, and runs the study once all N nodes have joined; every other task starts a Ray worker node
    against it until task 0 says the study ended. Trials are placed on every node as resources allow
    (tune.cpus_per_trial CPUs each; tune.max_concurrent_trials across nodes); each trial records its node.
    Signalled before its time limit (or preempted), task 0 requeues the job, which resumes the study from
    <results>/<study>/ray/ (Tuner.restore), as a rerun after a crash does.
    """

    def __init__(self, config: dict, cpus: int, nodes: int = 1, folder: str | None = None):
        self.config, self.cpus, self.nodes, self.folder = config, cpus, nodes, folder

    def __call__(self) -> dict | None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        nodes = getattr(self, "nodes", 1)  # a job pickled before multi-node studies
        if nodes == 1:
            from ssmpipe.tune.study import run_study

            return run_study(self.config, cpus=self.cpus)
        env = submitit.JobEnvironment()
        meeting = Rendezvous(Path(self.folder), env.job_id)
        for key, value in RAY_NODE_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
        if env.global_rank == 0:
            return self._head(meeting, nodes)
        return self._worker(meeting, env.global_rank)

    def _head(self, meeting: Rendezvous, nodes: int) -> dict:
        """Task 0: a Ray head on this node, then the study on the cluster once every node has joined."""
        token = secrets.token_hex(32)
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)  # before Ray is imported: it reads them once
        from ray.util import get_node_ip_address

        from ssmpipe.tune.study import ENVIRONMENT, run_study

        for key, value in ENVIRONMENT.items():  # Ray's processes (and the trials they start) inherit them
            os.environ.setdefault(key, value)
        ip, port = get_node_ip_address(), free_port()
        address = f"{ip}:{port}"
        ray = start_ray_node(
            ["--head", f"--node-ip-address={ip}", f"--port={port}", "--include-dashboard=false"], self.cpus
        )
        try:
            _wait_listening(ip, port, ray)
            meeting.announce(address, token)
            log.info(
                "study %s: Ray head at %s on %s; waiting for %d worker node(s)",
                cfg.study_name(self.config),
                address,
                node_name(),
                nodes - 1,
            )
            return run_study(self.config, cpus=self.cpus, address=address, nodes=nodes)
        finally:
            meeting.close()
            stop(ray)

    def _worker(self, meeting: Rendezvous, rank: int) -> dict:
        """Any other task: a Ray worker node joining task 0's head, until the study ends."""
        from ssmpipe.tune.study import ENVIRONMENT

        for key, value in ENVIRONMENT.items():
            os.environ.setdefault(key, value)
        head = meeting.wait_for_head()
        if head is None:
            log.info("task %d (%s): the study ended before this node joined", rank, node_name())
            return {"node": node_name(), "joined": False}
        address = head["address"]
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head["token"])
        ray = start_ray_node([f"--address={address}"], self.cpus)
        log.info("task %d (%s): Ray worker node joining %s", rank, node_name(), address)
        try:
            while not meeting.closed():
                if ray.poll() is not None:  # its Ray ended (the head is gone, or it crashed): nothing left to do
                    log.warning(
                        "task %d (%s): Ray ended (exit %s) before the study did", rank, node_name(), ray.returncode
                    )
                    break
                time.sleep(1)
        finally:
            stop(ray)
        return {"node": node_name(), "joined": True}


class Rendezvous:
    """The head's address and the end of the study, as files in the job's private folder, per job start.

    <job>_<restart>.ray-head holds {"address": "ip:port", "token": the Ray cluster's token}
    (mode 0600, in a 0700 folder); <job>_<restart>.ray-done says the head task ended.
    SLURM_RESTART_COUNT tells a requeued job's start from the earlier ones.
    """

    def __init__(self, folder: Path, job_id: str):
        start = f"{job_id}_{os.environ.get('SLURM_RESTART_COUNT', '0')}"
        self.head, self.done = folder / f"{start}.ray-head", folder / f"{start}.ray-done"

    def announce(self, address: str, token: str) -> None:
        tmp = self.head.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"address": address, "token": token}, f)
        tmp.replace(self.head)

    def close(self) -> None:
        self.done.write_text("")

    def closed(self) -> bool:
        return self.done.exists()

    def wait_for_head(self, timeout_s: float = HEAD_WAIT_S) -> dict | None:
        """The head's address and token; None if the head task ended first; RuntimeError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.head.exists():
                return json.loads(self.head.read_text())
            if self.closed():
                return None
            time.sleep(0.5)
        raise RuntimeError(f"no Ray head address in {self.head} after {timeout_s:.0f} s (see task 0's log)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def start_ray_node(args: list[str], cpus: int) -> subprocess.Popen:
    """`ray start --block` for this node with `cpus` CPUs and its GPUs, in its own session; stopped by `stop`.

    Every port a node opens besides the head's is free-picked: several nodes may share a
    host (and other Ray instances may run there). Its files go to a private temporary
    folder of its own, not /tmp/ray: `ray start` records its cluster's address there
    (ray_current_cluster), and any `ray.init()` on the host reading /tmp/ray's would join
    this cluster, or fail on it once it is gone.
    """
    import torch

    gpus = torch.cuda.device_count()
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    temp = tempfile.mkdtemp(prefix="ray-ssmpipe-", dir="/tmp" if os.path.isdir("/tmp") else None)  # short: sockets
    cmd = [
        ray,
        "start",
        "--block",
        f"--temp-dir={temp}",
        f"--num-cpus={cpus}",
        f"--num-gpus={gpus}",
        f"--object-store-memory={256 * 2**20}",
        "--disable-usage-stats",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        *args,
    ]
    log.info("node %s: %s", node_name(), " ".join(cmd))
    node = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
    node.temp_dir = temp
    return node


def stop(ray: subprocess.Popen) -> None:
    """Stop a node started by start_ray_node: SIGTERM (ray start stops what it started), then SIGKILL; its files go."""
    if ray.poll() is None:
        ray.send_signal(signal.SIGTERM)
        try:
            ray.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(ray.pid, signal.SIGKILL)
            ray.wait()
    shutil.rmtree(ray.temp_dir, ignore_errors=True)


def _wait_listening(ip: str, port: int, ray: subprocess.Popen) -> None:
    deadline = time.monotonic() + GCS_WAIT_S
    while time.monotonic() < deadline:
        if ray.poll() is not None:
            raise RuntimeError(f"the Ray head on {node_name()} ended (exit {ray.returncode}) before it listened")
        try:
            with socket.create_connection((ip, port), timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the Ray head on {node_name()} did not listen on {ip}:{port} within {GCS_WAIT_S} s")


def check_fits(config: dict) -> None:
    """A trial must fit on one node: tune.cpus_per_trial ≤ slurm.cpus_per_task (GPUs alike); ConfigError if not."""
    t, requests = config["tune"], config["slurm"]
    if t["cpus_per_trial"] > requests["cpus_per_task"]:
        raise ConfigError(
            f"tune.cpus_per_trial = {t['cpus_per_trial']} is more than the {requests['cpus_per_task']} "
            f"CPUs of a node of the study's job (slurm.cpus_per_task): no trial could start"
        )
    if t["gpus_per_trial"] > requests["gpus_per_node"]:
        raise ConfigError(
            f"tune.gpus_per_trial = {t['gpus_per_trial']} is more than the {requests['gpus_per_node']} "
            f"GPUs of a node of the study's job (slurm.gpus_per_node): no trial could start"
        )


def run_on_slurm(config: dict) -> dict:
    """Run the config's study as one SLURM job (`slurm.run`) and wait for it; return its summary (study.json)."""
    study = cfg.study_name(config)
    results = Path(config["results"]).resolve()
    config = {**config, "results": str(results)}  # the job may start in another folder
    requests = config["slurm"]
    nodes = requests.get("nodes", 1)
    if nodes > 1:
        check_fits(config)
    folder = Layout(results).slurm_dir(study)  # made private by slurm.run: submitit pickles into it
    job = StudyJob(config, requests["cpus_per_task"], nodes, str(folder))
    return slurm.run(job, folder, requests, slurm.job_name(results, f"tune-{study}"), f"study {study}", results, nodes)
