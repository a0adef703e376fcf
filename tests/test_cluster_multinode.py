"""A two-node Ray cluster on loopback: what `ray up` builds, minus SSH and the cloud.

The fixture starts a head (`ray start --head`, with the `train_driver` resource as in
cluster.yaml) and a second raylet that joins it, each advertising 1 CPU, under one private temp
dir, with token auth (RAY_AUTH_MODE=token and a throwaway RAY_AUTH_TOKEN: nothing is read from
or written to ~/.ray) and only free loopback ports. Work is submitted the way docs/cluster.md
does it, `ray job submit --address http://127.0.0.1:<dashboard> -- ...`, and the test asserts
from node IDs that the Train workers of one run landed on both nodes.

Teardown stops exactly what the fixture started: the two `ray start --block` process groups,
then any leftover process whose command line names the fixture's temp dir. Never `ray stop`:
it would kill every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from fixtures.ports import RAYLET_PORTS, free_ports, raylet_port_args

pytestmark = pytest.mark.ray

PY = sys.executable
RAY_CLI = [PY, "-m", "ray.scripts.scripts"]
START_TIMEOUT_S = 90
JOB_TIMEOUT_S = 300
OWNER_ENV = "RAYGROW_TEST_CLUSTER"


def our_pids(sessions: set[int], text: str) -> list[int]:
    """Live PIDs that are ours: in one of `sessions` (Ray renames and regroups its workers, but
    they keep the session of the `ray start` that spawned them), or whose command line or
    environment contains `text` (every process of the cluster, jobs included, inherits
    `OWNER_ENV=<temp dir>`)."""
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            state, session = fields[0], int(fields[3])  # after "(comm)": state ppid pgrp session
            if state in "ZX":
                continue  # exited, waiting to be reaped
            if (
                session in sessions
                or needle in (entry / "cmdline").read_bytes()
                or needle in (entry / "environ").read_bytes()
            ):
                found.append(int(entry.name))
    return found


class LoopbackCluster:
    """Head + one worker raylet on 127.0.0.1, started and stopped by PID."""

    def __init__(self) -> None:
        # short path: Ray's Unix sockets live below it (108-byte limit)
        self.root = Path(tempfile.mkdtemp(prefix="rgc-", dir="/tmp"))
        self.temp_dir = self.root / "ray"
        # every port of both nodes at once, so that no two of them coincide
        self.port, self.dashboard_port, self.client_port, *self.node_port_pool = free_ports(
            3 + 2 * RAYLET_PORTS
        )
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        # what cluster.yaml exports before `ray start --head`; jobs must inherit it
        self.mlflow_uri = f"sqlite:///{self.root}/mlflow.db"
        # nothing of another Ray instance in this process (the session fixture's address, API
        # server, token settings) may reach this cluster: it starts from a Ray-free environment
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=uuid.uuid4().hex,
            RAY_USAGE_STATS_ENABLED="0",
            RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="45",
            MLFLOW_TRACKING_URI=self.mlflow_uri,
            **{OWNER_ENV: str(self.root)},
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        self.procs: list[subprocess.Popen] = []
        self.node_ids: dict[str, str] = {}

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [*RAY_CLI, "start", "--block", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stopped with killpg
        )
        log.close()
        self.procs.append(proc)

    def start(self) -> None:
        common = [
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}",
            "--num-cpus=1",
            "--num-gpus=0",
            "--object-store-memory=150000000",
            "--disable-usage-stats",
        ]
        self._start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                f"--ray-client-server-port={self.client_port}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                '--resources={"train_driver": 4, "node_a": 1}',
                *common,
                *raylet_port_args(self.node_port_pool[:RAYLET_PORTS]),
            ],
        )
        self._wait_for_port(self.port)
        self._start(
            "worker",
            [
                f"--address={self.address}",
                '--resources={"node_b": 1}',
                *common,
                *raylet_port_args(self.node_port_pool[RAYLET_PORTS:]),
            ],
        )
        self.node_ids = self.query(
            """
            deadline = time.time() + 60
            while True:
                alive = [n for n in ray.nodes() if n["Alive"]]
                if len(alive) == 2 or time.time() > deadline:
                    break
                time.sleep(0.5)
            out = {}
            for n in alive:
                tag = "head" if "node_a" in n["Resources"] else "worker"
                out[tag] = n["NodeID"]
            """
        )
        assert set(self.node_ids) == {"head", "worker"}, self.logs()
        self._wait_for_port(self.dashboard_port)

    def _wait_for_port(self, port: int) -> None:
        deadline = time.time() + START_TIMEOUT_S
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        raise RuntimeError(f"port {port} did not open\n{self.logs()}")

    def query(self, body: str) -> dict:
        """Run `body` in a fresh driver connected to the cluster (as `ADDRESS`); it sets `out`.

        Always pass `address=ADDRESS` to State API calls: their own "auto" lookup would find
        every Ray instance on the machine.
        """
        script = f"import json, time\nimport ray\nADDRESS = {self.address!r}\n"
        script += "ray.init(address=ADDRESS, logging_level='ERROR')\n"
        script += textwrap.dedent(body) + "\nprint('QUERY ' + json.dumps(out))\n"
        result = subprocess.run(
            [PY, "-c", script], env=self.env, capture_output=True, text=True, timeout=120
        )
        line = next((x for x in result.stdout.splitlines() if x.startswith("QUERY ")), None)
        assert line, f"query failed:\n{result.stdout}\n{result.stderr}"
        return json.loads(line[len("QUERY ") :])

    def submit(self, *entrypoint: str, timeout: float = JOB_TIMEOUT_S) -> str:
        """`ray job submit` as in docs/cluster.md; returns the job's output (asserts success)."""
        cmd = [*RAY_CLI, "job", "submit", f"--address={self.dashboard_url}", "--", *entrypoint]
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    def train_worker_nodes(self) -> dict[str, int]:
        """Node ID -> number of Ray Train worker actors (alive or dead) placed there."""
        return self.query(
            """
            from ray.util.state import list_actors
            out = {}
            for a in list_actors(address=ADDRESS, filters=[("class_name", "=", "RayTrainWorker")],
                                 detail=True, limit=10000, raise_on_missing_output=False):
                out[a.node_id] = out.get(a.node_id, 0) + 1
            """
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.root.glob("*.log"))
        )

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM everything we started, SIGKILL what is left after `grace_s`; by PID only."""
        sessions = {proc.pid for proc in self.procs}  # start_new_session: sid == pid
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 15.0)):
            for pid in our_pids(sessions, str(self.root)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.time() + wait_s
            while time.time() < deadline:
                for proc in self.procs:
                    proc.poll()  # reap our direct children
                if not our_pids(sessions, str(self.root)):
                    break
                time.sleep(0.25)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.leftovers = our_pids(sessions, str(self.root))
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def loopback_cluster():
    if shutil.which("bash") is None or not Path("/proc").is_dir():
        pytest.skip("needs Linux /proc to stop the cluster's processes by PID")

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")  # pytest then still runs the teardown

    previous = signal.signal(signal.SIGTERM, interrupt)
    cluster = LoopbackCluster()
    started = time.time()
    try:
        cluster.start()
        cluster.start_s = time.time() - started
        yield cluster
    finally:
        cluster.stop()
        signal.signal(signal.SIGTERM, previous)
        assert cluster.leftovers == [], f"processes left running: {cluster.leftovers}"


SPREAD_JOB = """
import json, os, sys, tempfile

import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, prepare_model


def per_worker(cfg):
    rank = ray.train.get_context().get_world_rank()
    model = prepare_model(torch.nn.Linear(4, 1))  # DDP over gloo, across the two nodes
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(rank)  # different data per rank: only the all-reduce keeps them equal
    for _ in range(3):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    nodes = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    weights = [None] * dist.get_world_size()
    dist.all_gather_object(weights, model.module.weight.detach().flatten().tolist())
    metrics = {"nodes": nodes, "weights_equal": all(w == weights[0] for w in weights)}
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:
            with open(os.path.join(d, "state.json"), "w") as f:
                json.dump(metrics, f)
            checkpoint = Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


ray.init()  # RAY_ADDRESS is set by the job supervisor
result = TorchTrainer(
    per_worker,
    scaling_config=ScalingConfig(
        num_workers=2, resources_per_worker={"CPU": 1}, placement_strategy="STRICT_SPREAD"
    ),
    run_config=RunConfig(name="spread-smoke", storage_path=sys.argv[1]),
).fit()
out = {
    "metrics": result.metrics,
    "checkpoint": result.checkpoint.path if result.checkpoint else None,
    "driver_node": ray.get_runtime_context().get_node_id(),
    "mlflow_tracking_uri": os.environ.get("MLFLOW_TRACKING_URI"),
}
print("RESULT " + json.dumps(out))
"""


def job_result(output: str) -> dict:
    line = next((x for x in output.splitlines() if x.startswith("RESULT ")), None)
    assert line, output[-6000:]
    return json.loads(line[len("RESULT ") :])


def test_train_workers_span_both_nodes(loopback_cluster, tmp_path):
    """A 2-worker Train V2 run (DDP over gloo) submitted as a job: one worker per node."""
    cluster = loopback_cluster
    script = tmp_path / "spread_job.py"
    script.write_text(SPREAD_JOB)
    storage = tmp_path / "storage"
    started = time.time()
    result = job_result(cluster.submit(PY, str(script), str(storage)))
    elapsed = time.time() - started

    nodes = set(result["metrics"]["nodes"])
    assert nodes == set(cluster.node_ids.values()), (result, cluster.node_ids)
    assert result["metrics"]["weights_equal"], "DDP all-reduce across nodes kept ranks in sync"
    # the job's driver ran on the head and inherited the env exported before `ray start --head`
    assert result["driver_node"] == cluster.node_ids["head"]
    assert result["mlflow_tracking_uri"] == cluster.mlflow_uri
    # rank 0's checkpoint was persisted to the run's storage path
    checkpoint = Path(result["checkpoint"])
    assert checkpoint.is_relative_to(storage)
    assert json.loads((checkpoint / "state.json").read_text())["weights_equal"]
    # the State API (dashboard on, token auth) agrees on where the Train workers ran
    placed = cluster.train_worker_nodes()
    assert set(placed) == set(cluster.node_ids.values()), placed
    print(f"cluster start {cluster.start_s:.1f}s, spread job {elapsed:.1f}s")


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.slow
def test_raygrow_train_smoke_spans_both_nodes(loopback_cluster, tmp_path):
    """`python -m raygrow.train --smoke-test --workers 2` as a job: its two ranks on two nodes.

    Each node offers 1 CPU and each worker takes 1, so the run's placement group must span
    both raylets whatever its placement strategy.
    """
    if not _module_exists("raygrow.train.driver"):
        pytest.skip("raygrow.train.driver (Ray Train driver) is not in the tree yet")
    cluster = loopback_cluster
    before = cluster.train_worker_nodes()
    out = tmp_path / "train"
    cluster.submit(PY, "-m", "raygrow.train", "--smoke-test", "--workers", "2", "--out", str(out))
    after = cluster.train_worker_nodes()
    new = {node: after[node] - before.get(node, 0) for node in after}
    assert {node for node, n in new.items() if n > 0} == set(cluster.node_ids.values()), new
    assert (out / "metrics.jsonl").is_file()


@pytest.mark.slow
def test_raygrow_search_smoke_spans_both_nodes(loopback_cluster, tmp_path):
    """`python -m raygrow.search --smoke-test --workers 2` as a job, as on a real cluster."""
    if not _module_exists("raygrow.search.__main__"):
        pytest.skip("raygrow.search CLI is not in the tree yet")
    cluster = loopback_cluster
    before = cluster.train_worker_nodes()
    out = tmp_path / "search"
    # the form docs/cluster.md uses: the head's MLFLOW_TRACKING_URI, expanded on the head
    command = (
        f"exec {PY} -m raygrow.search --smoke-test --workers 2 --max-concurrent 1 "
        f'--out {out} --tracking-uri "$MLFLOW_TRACKING_URI"'
    )
    cluster.submit("bash", "-c", command, timeout=900)
    after = cluster.train_worker_nodes()
    new = {node: after[node] - before.get(node, 0) for node in after}
    assert {node for node, n in new.items() if n > 0} == set(cluster.node_ids.values()), new
    assert (out / "search.json").is_file()
    assert Path(cluster.mlflow_uri.removeprefix("sqlite:///")).is_file()
