"""Drives a running policy_node through one scenario and writes what it saw as JSON.

    python test/node_scripts/node_driver.py stream OUT.json --prefix /t123
    python test/node_scripts/node_driver.py lifecycle OUT.json --prefix /t123 --good-policy DIR

The node runs under the same prefix (fake_robot.node_args(prefix, ...)).

Every step records into a dict; the test asserts on it. An exception is recorded as
"error" (the JSON is always written) so a failing test shows how far the scenario got.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

import numpy as np
import rclpy

from fake_robot import FakeRobot, picture, stamp_ns

MS = 1_000_000


def chunk_info(c) -> dict | None:
    if c is None:
        return None
    a = np.asarray(c.actions, np.float32)
    return {"stamp_ns": stamp_ns(c), "frame_id": c.header.frame_id, "seq": c.seq, "policy_id": c.policy_id,
            "task_uid": c.task_uid, "horizon": c.horizon, "action_dim": c.action_dim,
            "n_action_steps": c.n_action_steps, "n_actions": len(a), "actions": a.tolist(),
            "decode_mode": c.decode_mode, "tokens_generated": c.tokens_generated, "tokens_max": c.tokens_max,
            "prefix_len": c.prefix_len, "refine_iters": c.refine_iters, "deadline_ms": c.deadline_ms,
            "deadline_reference": c.deadline_reference, "deadline_met": c.deadline_met,
            "truncated": c.truncated, "latency_ms": c.latency_ms, "observation_age_ms": c.observation_age_ms,
            "clipped": c.clipped, "seed": c.seed, "temperature": c.temperature}


def scenario_stream(robot: FakeRobot, out: dict):
    """auto_start node: shapes and stamps, runtime decode changes, rejected values,
    encodings, skewed and stale inputs, diagnostics."""
    t0 = time.monotonic()
    out["services"] = robot.wait_for_services(60)
    out["auto_started"] = robot.wait_state("active", 120)
    out["subscribed"] = robot.wait_for_subscribers(60)
    out["warm_up"] = chunk_info(robot.warm_up(60))
    out["ready_s"] = time.monotonic() - t0

    # 1. shapes + stamps; a request stamp between two frames maps to the nearest camera frame
    basic = []
    for _ in range(3):
        t = robot.now_ns()
        basic.append({"requested": t, "chunk": chunk_info(robot.chunk_for(t))})
    out["basic"] = basic
    t = robot.now_ns()
    robot.publish_observation(t)
    start = robot.chunk_count()
    robot.request(t - 7 * MS)                                   # 7 ms off: within max_skew 20 ms
    out["near_request"] = {"frame": t, "requested": t - 7 * MS,
                           "chunk": chunk_info(robot.wait_chunk(timeout=10, since=start))}

    # 2. runtime decode changes via SetParameters take effect on the next chunk
    changes = {}
    for name, values in [("k3", {"max_tokens": 3}),
                         ("blockwise", {"max_tokens": 8, "decode_mode": "blockwise"}),
                         ("blockwise_r2", {"refine_iters": 2}),
                         ("deadline", {"decode_mode": "ar", "refine_iters": 1, "deadline_ms": 1.0,
                                       "deadline_reference": "request"}),
                         ("sampled", {"deadline_ms": 0.0, "deadline_reference": "capture",
                                      "temperature": 1.0, "top_k": 5, "seed": 100}),
                         ("task", {"temperature": 0.0, "top_k": 0, "seed": -1, "task_uid": 3}),
                         ("back_to_default", {"task_uid": 10})]:
        results = robot.set_params(**values)
        changes[name] = {"set": results, "chunk": chunk_info(robot.chunk_for())}
    out["changes"] = changes

    # 3. rejected values keep the old ones (and the chunks keep the old behaviour)
    rejected = {
        "bad_choice": robot.set_params(decode_mode="beam"),
        "out_of_range": robot.set_params(max_tokens=99),
        "negative_deadline": robot.set_params(deadline_ms=-5.0),
        "wrong_type": robot.set_params(deadline_ms="fast"),
        "not_runtime": robot.set_params(policy_path="/nonexistent"),
        "atomic_batch": robot.set_params(atomic=True, max_tokens=2, decode_mode="beam"),
    }
    out["rejected"] = rejected
    out["after_rejected_params"] = robot.get_params("decode_mode", "max_tokens", "deadline_ms", "policy_path")
    out["after_rejected_chunk"] = chunk_info(robot.chunk_for())

    # 4. every encoding of the same picture -> the same chunk (greedy: identical actions)
    color = [picture(seed=11), picture(seed=12)]
    gray = [picture(seed=13, gray=True), picture(seed=14, gray=True)]
    enc = {}
    for label, pics, encoding, pad in [("rgb8", color, "rgb8", 0), ("bgr8", color, "bgr8", 0),
                                       ("rgba8", color, "rgba8", 4), ("bgra8", color, "bgra8", 0),
                                       ("rgb8_padded", color, "rgb8", 7), ("gray_rgb8", gray, "rgb8", 0),
                                       ("gray_mono8", gray, "mono8", 0), ("gray_mono8_padded", gray, "mono8", 3),
                                       # controls: a wrong channel order / another picture must differ
                                       ("rgb8_channels_swapped", [p[:, :, ::-1] for p in color], "rgb8", 0),
                                       ("gray_darker_rgb8", [p // 2 for p in gray], "rgb8", 0)]:
        robot.publish_observation(robot.now_ns(), pictures=pics, encoding=encoding, pad=pad)  # history
        time.sleep(0.05)
        enc[label] = chunk_info(robot.chunk_for(pictures=pics, encoding=encoding, pad=pad))
    out["encodings"] = enc

    # 5. skewed inputs (joints 100 ms after the cameras) -> no chunk; the request expires
    robot.set_params(request_timeout_ms=500.0)
    diag_n = len(robot.diagnostics)
    before = robot.latest_diagnostics(timeout=3.0, after=diag_n) or {}
    t = robot.now_ns()
    start = robot.chunk_count()
    robot.publish_observation(t, joint_offset_ns=100 * MS)
    robot.request(t)
    out["skewed_no_chunk"] = robot.no_chunk_within(1.5, start)
    robot.publish_observation(t + 150 * MS)                     # a complete frame again: back to normal
    out["after_skew_chunk"] = chunk_info(robot.chunk_for())

    # 6. stale inputs (max_age_ms 300, request 600 ms after the capture) -> no chunk
    out["set_max_age"] = robot.set_params(max_age_ms=300.0)
    t = robot.now_ns()
    start = robot.chunk_count()
    robot.publish_observation(t)
    time.sleep(0.6)
    robot.request(t)
    out["stale_no_chunk"] = robot.no_chunk_within(1.5, start)
    out["fresh_chunk"] = chunk_info(robot.chunk_for())
    out["set_max_age_off"] = robot.set_params(max_age_ms=0.0)
    # the random tiny policy always overshoots its action bounds: drop instead of clip
    out["set_drop"] = robot.set_params(on_out_of_bounds="drop")
    out["drop_no_chunk"] = robot.chunk_for(timeout=1.5) is None
    out["set_clip"] = robot.set_params(on_out_of_bounds="clip")
    out["clip_chunk"] = chunk_info(robot.chunk_for())
    # a request for an instant no camera captured -> no chunk
    start = robot.chunk_count()
    robot.request(robot.now_ns() - 60_000 * MS)
    out["uncaptured_no_chunk"] = robot.no_chunk_within(1.0, start)
    # an episode START clears the history: an instant captured before it is gone
    t_old = robot.now_ns()
    out["before_episode_chunk"] = chunk_info(robot.chunk_for(t_old))
    robot.episode_start(robot.now_ns())
    time.sleep(0.3)
    start = robot.chunk_count()
    robot.request(t_old)
    out["after_episode_old_no_chunk"] = robot.no_chunk_within(1.0, start)
    out["after_episode_chunk"] = chunk_info(robot.chunk_for())
    after = robot.latest_diagnostics(timeout=3.0, after=len(robot.diagnostics)) or {}
    out["diagnostics_before"], out["diagnostics_after"] = before, after
    out["chunks_total"] = robot.chunk_count()
    out["seqs"] = [c.seq for c in robot.chunks_since(0)]


def scenario_lifecycle(robot: FakeRobot, out: dict, good_policy: str):
    """auto_start:=false with a corrupt policy_path: unconfigured; configure fails readably;
    fix the path; configure loads; activate publishes; deactivate stops; cleanup frees;
    reconfigure with trigger rate."""
    out["services"] = robot.wait_for_services(60)
    out["state_start"] = robot.get_state()
    time.sleep(1.0)
    out["state_after_1s"] = robot.get_state()                  # auto_start false: stays unconfigured
    out["configure_corrupt"] = robot.change_state("configure")
    out["state_after_corrupt"] = robot.get_state()
    out["set_good_path"] = robot.set_params(policy_path=good_policy)
    t = time.monotonic()
    out["configure"] = robot.change_state("configure")
    out["configure_s"] = time.monotonic() - t
    out["state_configured"] = robot.get_state()
    out["subscribed"] = robot.wait_for_subscribers(60)
    start = robot.chunk_count()
    for _ in range(3):
        robot.chunk_for(timeout=0.3)
    out["inactive_no_chunk"] = robot.no_chunk_within(0.5, start)
    t = time.monotonic()
    out["activate"] = robot.change_state("activate")
    out["activate_s"] = time.monotonic() - t
    out["state_active"] = robot.get_state()
    out["first_chunk"] = chunk_info(robot.warm_up(60))
    out["second_chunk"] = chunk_info(robot.chunk_for())
    out["deactivate"] = robot.change_state("deactivate")
    out["state_deactivated"] = robot.get_state()
    start = robot.chunk_count()
    for _ in range(3):
        robot.chunk_for(timeout=0.3)
    out["deactivated_no_chunk"] = robot.no_chunk_within(0.7, start)
    t = time.monotonic()
    out["reactivate"] = robot.change_state("activate")
    out["reactivate_s"] = time.monotonic() - t
    out["reactivated_chunk"] = chunk_info(robot.chunk_for(timeout=15))
    out["deactivate2"] = robot.change_state("deactivate")
    out["cleanup"] = robot.change_state("cleanup")
    out["state_cleaned"] = robot.get_state()
    out["activate_unconfigured"] = robot.change_state("activate")
    out["cleaned_no_chunk"] = (robot.chunk_for(timeout=1.0) is None)
    # reconfigure (reload) with the rate trigger: chunks come without requests
    out["set_rate"] = robot.set_params(trigger="rate", rate_hz=5.0)
    out["reconfigure"] = robot.change_state("configure")
    out["reactivate_rate"] = robot.change_state("activate")
    out["state_rate"] = robot.get_state()
    out["resubscribed"] = robot.wait_for_subscribers(60)
    start = robot.chunk_count()
    end = time.monotonic() + 4.0
    while time.monotonic() < end:
        robot.publish_observation(robot.now_ns())
        time.sleep(0.05)
    out["rate_chunks"] = [chunk_info(c) for c in robot.chunks_since(start)]
    out["set_trigger_while_active"] = robot.set_params(trigger="request")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=("stream", "lifecycle"))
    ap.add_argument("out")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--good-policy", default="")
    a = ap.parse_args()
    rclpy.init()
    robot = FakeRobot(prefix=a.prefix)
    out = {"scenario": a.scenario}
    t0 = time.monotonic()
    try:
        if a.scenario == "stream":
            scenario_stream(robot, out)
        else:
            scenario_lifecycle(robot, out, a.good_policy)
    except Exception:
        out["error"] = traceback.format_exc()
    out["driver_s"] = time.monotonic() - t0
    with open(a.out, "w") as f:
        json.dump(out, f)
    robot.close()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
