"""The README's main job, end to end: the sim graph (recorder + policy node + sim bridge, real
processes) with the embedded default policy solves a LIBERO-Object task-0 episode from an init
state no demonstration used. Lockstep, greedy decoding and MuJoCo are deterministic, so the
outcome is too."""
import os
import re
import subprocess
import sys

import pytest

from ros_testing import REPO

pytestmark = [pytest.mark.ros, pytest.mark.libero]


def test_default_policy_solves_a_held_out_episode(tmp_path, ros_domain):
    env = dict(ros_domain[1])
    env["MUJOCO_GL"] = os.environ.get("MUJOCO_GL", "egl")
    out = subprocess.run([sys.executable, "-m", "oat_ros.ros.bringup", "sim", "--main-job",
                          "--set", "sim_bridge.init_state_index=40", "--run-dir", str(tmp_path / "run")],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "[bringup] policy: embedded default policy" in text
    for node in ("recorder", "policy_node", "sim_bridge"):
        assert re.search(rf"node {node}\s+exit code 0", text), text[-3000:]
    assert "success: 1/1 = 100.0 %" in text, text[-3000:]
    assert "decode: ar K=8" in text
