"""policy_node end to end: real rclpy, the node in its own process, a driver process playing
the robot (test/node_scripts/node_driver.py), a tiny random policy (fast to load).

Each scenario runs once per module (one node process, one driver) and the tests below assert
on what the driver recorded. Every run has its own ROS_DOMAIN_ID and, because other test runs
on the same machine may still collide on a domain, its own namespace + topic prefix.
"""
from __future__ import annotations

import itertools
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ros_testing import REPO, Proc, next_domain_id, read_json, ros_env

sys.path.insert(0, str(REPO / "test" / "node_scripts"))
from fake_robot import node_args  # noqa: E402
from tiny_policy import make_tiny_policy  # noqa: E402

pytestmark = pytest.mark.ros

DRIVER = str(REPO / "test" / "node_scripts" / "node_driver.py")
_run = itertools.count()


def _prefix() -> str:
    return f"/t{os.getpid()}_{next(_run)}"


def _env(domain: int) -> dict:
    env = ros_env(domain)
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(REPO / "test" / "node_scripts")])
    return env


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("policies")
    return make_tiny_policy(root / f"tiny_{os.getpid()}")


@pytest.fixture(scope="module")
def corrupt_policy(tiny_policy, tmp_path_factory) -> Path:
    bad = tmp_path_factory.mktemp("corrupt") / "tiny_truncated"
    bad.mkdir()
    shutil.copy(tiny_policy / "config.yaml", bad / "config.yaml")
    (bad / "model.safetensors").write_bytes((tiny_policy / "model.safetensors").read_bytes()[:100_000])
    return bad


def run_scenario(tmp: Path, scenario: str, node_params: dict, driver_args=(), timeout=150.0):
    """Start the node and the driver under a fresh domain + prefix; return (result, node log)."""
    prefix, env = _prefix(), _env(next_domain_id())
    node = Proc(node_args(prefix, **node_params), env, tmp / "node.log")
    out = tmp / "result.json"
    driver = Proc([DRIVER, scenario, str(out), "--prefix", prefix, *driver_args], env, tmp / "driver.log")
    try:
        driver.wait(timeout)
    finally:
        driver.stop()
        node_alive = node.popen.poll() is None
        node.stop()
    log = node.log_path.read_text(errors="replace")
    assert out.exists(), f"driver wrote nothing\n--- driver\n{driver.log_path.read_text()}\n--- node\n{log}"
    result = read_json(out)
    result["_node_alive_at_end"] = node_alive
    assert not result.get("error"), f"{result['error']}\n--- node log\n{log[-4000:]}"
    return result, log


def actions(chunk) -> np.ndarray:
    return np.asarray(chunk["actions"], np.float32).reshape(chunk["horizon"], chunk["action_dim"])


# --- scenario 1: auto_start, a stream of requests ------------------------------------------

@pytest.fixture(scope="module")
def stream(tiny_policy, tmp_path_factory):
    t0 = time.monotonic()
    result, log = run_scenario(tmp_path_factory.mktemp("stream"), "stream",
                               {"policy_path": str(tiny_policy)})
    result["_wall_s"] = time.monotonic() - t0
    return result, log


def test_auto_start_configures_and_activates(stream):
    r, log = stream
    assert r["services"] and r["auto_started"] and r["subscribed"]
    assert r["warm_up"] is not None
    assert "configured in" in log and "active: trigger=request" in log
    assert r["_node_alive_at_end"]


def test_chunks_have_the_right_shape_and_stamp(stream, tiny_policy):
    r, _ = stream
    for item in r["basic"]:
        c = item["chunk"]
        assert c is not None, "no chunk for a complete observation"
        assert c["stamp_ns"] == item["requested"]          # capture stamp of the observation
        assert (c["horizon"], c["action_dim"], c["n_action_steps"], c["n_actions"]) == (32, 7, 16, 224)
        assert c["frame_id"] == "camera" and c["policy_id"] == tiny_policy.name and c["task_uid"] == 10
        assert (c["decode_mode"], c["tokens_generated"], c["tokens_max"]) == ("ar", 8, 8)
        assert (c["prefix_len"], c["refine_iters"], c["seed"], c["temperature"]) == (0, 0, -1, 0.0)
        assert c["deadline_ms"] == 0.0 and c["deadline_met"] and not c["truncated"]
        assert c["latency_ms"] > 0 and c["observation_age_ms"] >= c["latency_ms"] - 1.0
        # the random tiny decoder overshoots its [-1, 1] bounds: clipped and flagged
        a = actions(c)
        assert c["clipped"] and a.min() >= -1.0 and a.max() <= 1.0 and np.isfinite(a).all()
    near = r["near_request"]                                 # request 7 ms off the frame
    assert near["chunk"] is not None and near["chunk"]["stamp_ns"] == near["frame"]
    seqs = r["seqs"]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    start = seqs.index(r["warm_up"]["seq"])
    assert seqs[start:] == list(range(seqs[start], seqs[start] + len(seqs) - start))


def test_decode_settings_change_mid_stream(stream):
    ch = stream[0]["changes"]
    for name, item in ch.items():
        assert all(res["successful"] for res in item["set"]), (name, item["set"])
        assert item["chunk"] is not None, name
    k3 = ch["k3"]["chunk"]
    assert (k3["decode_mode"], k3["tokens_generated"], k3["tokens_max"]) == ("ar", 3, 3)
    bw = ch["blockwise"]["chunk"]
    assert (bw["decode_mode"], bw["tokens_generated"], bw["tokens_max"], bw["prefix_len"],
            bw["refine_iters"]) == ("blockwise", 8, 8, 4, 1)
    assert ch["blockwise_r2"]["chunk"]["refine_iters"] == 2
    dl = ch["deadline"]["chunk"]       # 1 ms from the request: hopeless -> truncated at min_tokens
    assert (dl["decode_mode"], dl["deadline_ms"], dl["deadline_reference"]) == ("ar", 1.0, 1)
    assert dl["truncated"] and not dl["deadline_met"] and 1 <= dl["tokens_generated"] < 8
    sp = ch["sampled"]["chunk"]
    assert (sp["temperature"], sp["seed"], sp["deadline_ms"], sp["tokens_generated"]) == (1.0, 100 + sp["seq"], 0.0, 8)
    assert ch["task"]["chunk"]["task_uid"] == 3 and ch["task"]["chunk"]["seed"] == -1
    assert ch["back_to_default"]["chunk"]["task_uid"] == 10


def test_rejected_parameter_keeps_the_old_value(stream, tiny_policy):
    r, log = stream
    rej = r["rejected"]
    for name, results in rej.items():
        assert len(results) == 1 and not results[0]["successful"], (name, results)
        assert results[0]["reason"], name
    assert "decode_mode" in rej["bad_choice"][0]["reason"] and "blockwise" in rej["bad_choice"][0]["reason"]
    assert "max_tokens" in rej["out_of_range"][0]["reason"]
    assert "deadline_ms" in rej["negative_deadline"][0]["reason"]
    assert "reload" in rej["not_runtime"][0]["reason"]
    assert r["after_rejected_params"] == {"decode_mode": "ar", "max_tokens": 8, "deadline_ms": 0.0,
                                          "policy_path": str(tiny_policy)}
    c = r["after_rejected_chunk"]      # the atomic batch (max_tokens=2 + a bad value) left K at 8
    assert c is not None and (c["decode_mode"], c["tokens_generated"], c["deadline_ms"]) == ("ar", 8, 0.0)
    assert "parameter change refused" in log


def test_every_encoding_gives_the_same_chunk(stream):
    enc = stream[0]["encodings"]
    assert all(c is not None for c in enc.values()), {k: c is None for k, c in enc.items()}
    ref = actions(enc["rgb8"])
    for name in ("bgr8", "rgba8", "bgra8", "rgb8_padded"):
        np.testing.assert_array_equal(actions(enc[name]), ref, err_msg=name)
    gray = actions(enc["gray_rgb8"])
    for name in ("gray_mono8", "gray_mono8_padded"):
        np.testing.assert_array_equal(actions(enc[name]), gray, err_msg=name)
    # controls: the chunk does depend on the picture, so the equalities above mean something
    assert not np.array_equal(actions(enc["rgb8_channels_swapped"]), ref)
    assert not np.array_equal(actions(enc["gray_darker_rgb8"]), gray)


def test_skewed_and_stale_inputs_produce_no_chunk(stream):
    r, log = stream
    assert r["skewed_no_chunk"], "a chunk for joints 100 ms off the cameras (max_skew_ms 20)"
    assert r["after_skew_chunk"] is not None
    assert r["set_max_age"][0]["successful"] and r["set_max_age_off"][0]["successful"]
    assert r["stale_no_chunk"], "a chunk for an observation 600 ms old (max_age_ms 300)"
    assert r["fresh_chunk"] is not None
    assert r["uncaptured_no_chunk"]
    assert r["set_drop"][0]["successful"] and r["drop_no_chunk"]
    assert r["set_clip"][0]["successful"] and r["clip_chunk"] is not None and r["clip_chunk"]["clipped"]
    assert "no 'joints' sample within 20.0 ms" in log
    assert "newest observation is" in log and "max_age_ms 300" in log


def test_episode_start_clears_the_history(stream):
    r, _ = stream
    assert r["before_episode_chunk"] is not None
    assert r["after_episode_old_no_chunk"], "a chunk for an instant captured before the episode START"
    assert r["after_episode_chunk"] is not None


def test_diagnostics_count_what_happened(stream):
    r, _ = stream
    before, after = r["diagnostics_before"], r["diagnostics_after"]
    assert before and after, "no diagnostics from the node"
    for key in ("latency_p50_ms", "latency_p99_ms", "node_overhead_p50_ms", "node_overhead_p99_ms"):
        assert float(after[key]) >= 0.0
    assert after["active"] == "True" and int(after["chunks"]) >= r["chunks_total"] - 1
    delta = {k: int(after[k]) - int(before.get(k, 0)) for k in
             ("dropped_incomplete", "dropped_stale", "dropped_out_of_bounds")}
    assert delta["dropped_incomplete"] >= 3      # skewed, uncaptured, before the episode START
    assert delta["dropped_stale"] >= 1 and delta["dropped_out_of_bounds"] >= 1
    assert int(after["errors"]) == 0 and int(after["rejected_messages"]) == 0


# --- scenario 2: lifecycle driven by hand, starting from a corrupt checkpoint ---------------

@pytest.fixture(scope="module")
def lifecycle(tiny_policy, corrupt_policy, tmp_path_factory):
    return run_scenario(tmp_path_factory.mktemp("lifecycle"), "lifecycle",
                        {"auto_start": False, "policy_path": str(corrupt_policy)},
                        ["--good-policy", str(tiny_policy)])


def test_corrupt_checkpoint_leaves_the_node_unconfigured(lifecycle, corrupt_policy):
    r, log = lifecycle
    assert r["state_start"] == r["state_after_1s"] == "unconfigured"     # auto_start false
    assert r["configure_corrupt"] is False and r["state_after_corrupt"] == "unconfigured"
    line = next(l for l in log.splitlines() if "configure failed" in l)
    assert str(corrupt_policy / "model.safetensors") in line and "safetensors" in line
    assert "Traceback" not in log


def test_lifecycle_transitions(lifecycle):
    r, log = lifecycle
    assert r["set_good_path"][0]["successful"]
    assert r["configure"] and r["state_configured"] == "inactive"
    assert r["inactive_no_chunk"], "chunks while inactive"
    assert r["activate"] and r["state_active"] == "active" and r["first_chunk"] is not None
    assert r["second_chunk"] is not None
    assert r["deactivate"] and r["state_deactivated"] == "inactive"
    assert r["deactivated_no_chunk"], "chunks after deactivate"
    # re-activation keeps the model: no reload, chunks at once
    assert r["reactivate"] and r["reactivated_chunk"] is not None
    assert r["reactivate_s"] < r["configure_s"]
    assert r["deactivate2"] and r["cleanup"] and r["state_cleaned"] == "unconfigured"
    assert r["activate_unconfigured"] is False and r["cleaned_no_chunk"]
    # configure after cleanup loads again (cleanup freed the model)
    assert log.count("configured in") == 2 and log.count("configure failed") == 1
    assert r["_node_alive_at_end"]


def test_rate_trigger_after_reconfigure(lifecycle):
    r, _ = lifecycle
    assert all(x["successful"] for x in r["set_rate"]) and r["reconfigure"] and r["reactivate_rate"]
    assert r["state_rate"] == "active"
    chunks = r["rate_chunks"]          # 5 Hz for 4 s, no requests sent (fewer on a loaded machine)
    assert len(chunks) >= 2, len(chunks)
    stamps = [c["stamp_ns"] for c in chunks]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert not r["set_trigger_while_active"][0]["successful"]


# --- a bad start-up parameter ---------------------------------------------------------------

def test_invalid_startup_parameter_is_reported_not_ignored(tiny_policy, tmp_path):
    """Values given on the command line skip the on-set-parameters check; configure catches them."""
    env = _env(next_domain_id())
    node = Proc(node_args(_prefix(), policy_path=str(tiny_policy), trigger="sometimes"), env,
                tmp_path / "node.log")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "configure failed" not in node.output():
            assert node.popen.poll() is None, node.output()
            time.sleep(0.2)
        log = node.output()
        assert "configure failed: parameter 'trigger' = 'sometimes'" in log, log
        time.sleep(0.5)
        assert node.popen.poll() is None and "active: trigger" not in node.output()
    finally:
        node.stop()
