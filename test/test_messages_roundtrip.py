"""The generated ActionChunk crosses a process boundary with every field intact."""
import json
import math

import numpy as np
import pytest

from ros_testing import read_json, wait_for

pytestmark = pytest.mark.ros


def distinctive_chunk_fields():
    """A value for every field that differs from its default, so a dropped field shows."""
    horizon, dim = 32, 7
    actions = (np.arange(horizon * dim, dtype=np.float32) - 100.5) / 7.0
    return {
        "header": {"stamp": {"sec": 1234, "nanosec": 567890}, "frame_id": "panda_link0"},
        "seq": 2**40 + 3, "policy_id": "policy_ep-0250_sr-0.596@1a2b3c4d", "task_uid": 37,
        "horizon": horizon, "action_dim": dim, "n_action_steps": 16, "control_period_s": 0.05,
        "actions": actions.tolist(),
        "decode_mode": "blockwise", "tokens_generated": 5, "tokens_max": 8, "prefix_len": 4,
        "refine_iters": 2, "temperature": 0.7, "top_k": 10, "seed": -42,
        "deadline_ms": 12.5, "deadline_reference": 1, "deadline_met": True, "truncated": True,
        "observation_age_ms": 3.25, "latency_ms": 9.75, "encode_ms": 4.5, "decode_ms": 4.0,
        "detokenize_ms": 1.25, "clipped": True,
    }


def test_every_field_is_distinctive():
    from oat_ros_interfaces.msg import ActionChunk
    fields = distinctive_chunk_fields()
    assert set(fields) == set(ActionChunk.get_fields_and_field_types())


def test_action_chunk_round_trips_between_processes(tmp_path, ros_domain, spawn):
    _, env = ros_domain
    sent = distinctive_chunk_fields()
    (tmp_path / "sent.json").write_text(json.dumps(sent))
    out = tmp_path / "received.json"
    sub = spawn(["test/ros_scripts/chunk_sub.py", str(out)], env, "sub")
    pub = spawn(["test/ros_scripts/chunk_pub.py", str(tmp_path / "sent.json")], env, "pub")
    wait_for(lambda: out.exists() and out.stat().st_size > 0 or sub.popen.poll() is not None,
             timeout=60, what="the subscriber to receive a chunk")
    assert sub.wait(10) == 0, sub.output()
    got = read_json(out)
    assert pub.wait(30) == 0, pub.output()
    for key, value in sent.items():
        if isinstance(value, float):
            assert math.isclose(got[key], value, rel_tol=1e-6), key
        elif key == "actions":
            np.testing.assert_array_equal(np.float32(got[key]), np.float32(value))
        else:
            assert got[key] == value, key
