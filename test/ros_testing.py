"""Helpers for tests that start real ROS 2 processes.

Every ROS test gets its own ROS_DOMAIN_ID (unique across pytest-xdist workers) and runs with
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST so DDS never leaves the loopback interface.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_counter = itertools.count()
_DOMAINS_PER_WORKER = 45


def next_domain_id() -> int:
    """A ROS_DOMAIN_ID no other running test uses (1..~100, per xdist worker block)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker.startswith("gw") else 0
    # Offset by the pid so two pytest runs on one machine rarely share a domain.
    return 1 + index * _DOMAINS_PER_WORKER + (os.getpid() + next(_counter)) % _DOMAINS_PER_WORKER


def ros_env(domain_id: int, **extra: str) -> dict:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "test")]))
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Proc:
    """A child python process with captured output, stopped (SIGINT, then SIGKILL) on exit."""

    def __init__(self, args: list[str], env: dict, log_path: Path, cwd: Path = REPO):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen([sys.executable, *args], env=env, cwd=cwd,
                                      stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self, sig=signal.SIGINT, timeout: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self._log.close()
        return self.popen.returncode


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll predicate() until it returns a truthy value; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def read_json(path: Path):
    return json.loads(Path(path).read_text())
