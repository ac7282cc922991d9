"""Ray backend of oat-ros-eval-run: one episode job = one Ray task running one whole graph.

* Cluster: with no address, a new local cluster bound to 127.0.0.1 only (every Ray process:
  GCS, raylet, workers, runtime-env agent; no dashboard; no usage stats); with an address
  (``HEAD:6379`` or ``auto``), that cluster as it was started.
* Resources per task, declared honestly: CPUs (default 1), memory (default 2 GB: a LIBERO env
  needs about 1.5 GB, plus policy and recorder) and, when the cluster has GPUs, a GPU fraction
  for the policy node (default 0.25, with ``policy_node.device=cuda``).
* Isolation: the task takes a ROS_DOMAIN_ID of its machine's pool (flock, see
  :class:`oat_ros.eval.runner.DomainPool`: unique per running graph on a node) and runs the
  graph with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, writing its bag into the shared --out.
* Faults: tasks run with ``max_retries=0``; the driver sees a dead worker (killed, OOM-killed,
  node lost: ``ray.exceptions.RayError``) or a failed episode as the attempt's error and retries
  the job itself (up to --max-retries), so every attempt and its error are recorded.
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from oat_ros.eval.runner import run_episode_job
from oat_ros.eval.worklist import EpisodeJob

LOOPBACK = "127.0.0.1"
OBJECT_STORE_BYTES = 256 * 2**20    # only small results travel through it
GPU_FRACTION = 0.25


def _loopback_only_env():
    """Before Ray starts a local cluster: nothing may bind or talk beyond 127.0.0.1."""
    os.environ.pop("RAY_ADDRESS", None)                 # ray.init would join that cluster instead
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # With 'cluster mode' on (the Linux default), Ray replaces a node address of 127.0.0.1 by
    # the machine's network address, and its gRPC servers then listen on all interfaces. Off,
    # the node address stays 127.0.0.1 and every Ray server binds to it (the env var reaches
    # the processes Ray starts; the constant covers a ray module imported before).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        from ray._private import ray_constants
        ray_constants.ENABLE_RAY_CLUSTER = False
    except Exception:  # noqa: BLE001 - a Ray without that constant
        pass


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Start a local loopback-only cluster (address None) or join `address`."""
    if address is None:
        _loopback_only_env()
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address=LOOPBACK,
                 object_store_memory=OBJECT_STORE_BYTES, logging_level=logging.WARNING,
                 log_to_driver=False)
        addresses = {n.get("NodeManagerAddress") for n in ray.nodes()}
        if addresses != {LOOPBACK}:
            ray.shutdown()
            raise RuntimeError(f"local Ray cluster is not on loopback only (nodes at {sorted(addresses)})")
    else:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    return ray


def describe_error(err: BaseException) -> str:
    """One line for a Ray failure: what died and Ray's reason."""
    text = str(err).strip().splitlines()
    last = next((ln.strip() for ln in reversed(text) if ln.strip()), "")
    kind = type(err).__name__
    if kind in ("WorkerCrashedError", "ActorDiedError", "OutOfMemoryError", "NodeDiedError",
                "LocalRayletDiedError", "ObjectLostError", "OwnerDiedError"):
        return f"Ray worker died ({kind}): {last[:300]}"
    return f"{kind}: {last[:300]}"


class RayBackend:
    name = "ray"

    def __init__(self, out: Path, policy, extra, timeout, domains, *, address=None, num_cpus=None,
                 workers=0, cpus_per_worker=1.0, memory_per_worker_gb=2.0, gpus_per_worker="auto",
                 start=True):
        self.out, self.policy, self.extra, self.timeout = str(out), policy, list(extra), timeout
        self.domains = list(domains)
        self.refs: dict = {}                       # ObjectRef -> (job, attempt)
        self.cpus = float(cpus_per_worker)
        self.memory = int(float(memory_per_worker_gb) * 2**30)
        self.address = address
        self.capacity = max(1, workers or 1)
        self.gpus = 0.0
        self.setup_s = 0.0
        self._ray = None
        self._remote = None
        if not start:                              # nothing to run: no cluster needed
            self._note = "ray backend: nothing to run"
            return
        t0 = time.monotonic()
        ray = self._ray = init_ray(address, num_cpus)
        self.setup_s = time.monotonic() - t0
        total = ray.cluster_resources()
        has_gpu = total.get("GPU", 0) > 0
        if str(gpus_per_worker) == "auto":
            self.gpus = GPU_FRACTION if has_gpu else 0.0
        else:
            self.gpus = float(gpus_per_worker)
        if self.gpus > 0 and not any(s.startswith("policy_node.device=") for s in self.extra):
            self.extra.append("policy_node.device=cuda")    # the GPU Ray assigns (CUDA_VISIBLE_DEVICES)
        fits = [math.floor(total.get("CPU", 0) / self.cpus) if self.cpus > 0 else math.inf,
                math.floor(total.get("memory", 0) / self.memory) if self.memory > 0 else math.inf]
        if self.gpus > 0:
            fits.append(math.floor(total.get("GPU", 0) / self.gpus))
        fit = min(fits)
        if fit < 1:
            ray.shutdown()
            raise SystemExit(f"oat-ros-eval-run: the Ray cluster ({total}) cannot fit one graph "
                             f"({self.cpus} CPU, {self.memory / 2**30:.1f} GB, {self.gpus} GPU)")
        self.capacity = min(workers, fit) if workers else fit
        if workers > fit:
            print(f"[eval-run] --workers {workers}: the cluster fits {fit} graphs at once; using {fit}")
        options = {"num_cpus": self.cpus, "memory": self.memory, "max_retries": 0, "retry_exceptions": False}
        if self.gpus > 0:
            options["num_gpus"] = self.gpus
        self._remote = ray.remote(run_episode_job).options(**options)
        where = address or f"local cluster on {LOOPBACK}"
        self._note = (f"ray backend ({where}, started in {self.setup_s:.1f} s): {self.capacity} workers, each "
                      f"{self.cpus:g} CPU, {self.memory / 2**30:.1f} GB, {self.gpus:g} GPU; "
                      f"ROS_DOMAIN_IDs per node from {self.domains[0]}-{self.domains[-1]}")

    def describe(self) -> str:
        return self._note

    @property
    def running(self) -> int:
        return len(self.refs)

    def submit(self, job: EpisodeJob, attempt: int):
        ref = self._remote.remote(self.out, job, self.policy, self.extra, self.timeout, self.domains,
                                  attempt, self.name)
        self.refs[ref] = (job, attempt)

    def wait(self, timeout: float = 1.0) -> list:
        if not self.refs:
            return []
        ray = self._ray
        ready, rest = ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        if ready and rest:                         # and whatever else has finished by now
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        done = []
        for ref in ready:
            job, attempt = self.refs.pop(ref)
            try:
                res = ray.get(ref)
            except ray.exceptions.RayError as err:
                res = {"ok": False, "error": describe_error(err)}
            done.append((job, res))
        return done

    def close(self, cancel: bool = False):
        ray = self._ray
        if ray is None:
            return
        if cancel:
            for ref in list(self.refs):
                try:
                    ray.cancel(ref, force=True)     # kills the worker; its graph gets SIGTERM
                except Exception:  # noqa: BLE001
                    pass
        self.refs.clear()
        ray.shutdown()
        self._ray = None
