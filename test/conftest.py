import os

import pytest

from ros_testing import Proc, next_domain_id, ros_env

# Every ROS process started from the tests stays on loopback.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)


def _has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if not any("gpu" in item.keywords for item in items) or _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def ros_domain():
    """A fresh ROS_DOMAIN_ID and the matching environment for child processes."""
    domain = next_domain_id()
    return domain, ros_env(domain)


@pytest.fixture
def spawn(tmp_path):
    """spawn(args, env, name) -> Proc; every process is stopped at teardown."""
    procs = []

    def _spawn(args, env, name="proc"):
        proc = Proc(list(args), env, tmp_path / f"{name}-{len(procs)}.log")
        procs.append(proc)
        return proc

    yield _spawn
    for proc in reversed(procs):
        proc.stop()
