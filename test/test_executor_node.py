"""chunk_executor end to end: the executor in its own process, fed scripted chunks by a real
publisher process (test/executor_scripts/scripted_chunks.py).

Real robot hardware cannot exist here: the same script subscribes to the executor's command
topics exactly as the ros2_control controllers would (joint_trajectory_controller, a servo
node, a gripper forward-command controller) and records the command stream; it also plays the
robot's /joint_states and /eef_pose publishers. Each scenario runs once per module on its own
ROS_DOMAIN_ID and under its own namespace / topic prefix; the tests assert on the recording:

  twist  latest merge, delay compensation, rate and values, gripper, rejected chunks (NaN,
         out of range, wrong action_dim, older stamp), grace -> hold -> watchdog, disable /
         enable, parameter validation, SIGINT -> stop command
  blend  joint_trajectory (absolute joints), blend weights, joint-limit rejection, linear
         gripper with 2 joints
  ensemble  joint_trajectory delta mode from the measured joint state (blocked until there
         is one), temporal-ensemble weights, no gripper
  pose   integrated end-effector target, workspace clamp, late_policy continue, then hold;
         the policy's /diagnostics status (ERROR, then silence) holds the robot
Every executed tick is also checked against an independent replay of oat_ros.chunks.ChunkQueue
fed the recorded arrival times.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from collections import defaultdict

import numpy as np
import pytest

from ros_testing import REPO, Proc, next_domain_id, ros_env

pytestmark = pytest.mark.ros

SCRIPT = str(REPO / "test" / "executor_scripts" / "scripted_chunks.py")
P = 0.05
_run = itertools.count()
EXECUTED = ("chunk", "blend", "ensemble", "grace", "continue")


def _yaml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_yaml(v) for v in value) + "]"
    return str(value)


def run_scenario(tmp, name: str, output: str, params: dict, script: dict, timeout=90.0):
    """Start the executor + the script; return (records by topic, executor log, executor rc)."""
    prefix, env = f"/t{os.getpid()}_{next(_run)}", ros_env(next_domain_id())
    topics = {"chunk": f"{prefix}/oat/action_chunk", "arm": f"{prefix}/arm_cmd",
              "gripper": f"{prefix}/gripper_cmd", "joint_states": f"{prefix}/joint_states",
              "eef_pose": f"{prefix}/eef_pose"}
    if params.get("gripper_index", 6) < 0:
        topics["gripper"] = None
    topic_params = {"chunk_topic": topics["chunk"], f"{output}_topic": topics["arm"],
                    "gripper_topic": topics["gripper"] or f"{prefix}/unused_gripper",
                    "joint_states_topic": topics["joint_states"],
                    "eef_pose_topic": topics["eef_pose"]}
    args = ["-m", "oat_ros.ros.executor_node", "--ros-args", "-r", f"__ns:={prefix}"]
    for key, value in {"output": output, **topic_params, **params}.items():
        if isinstance(value, str):
            value = value.replace("{prefix}", prefix)
        args += ["-p", f"{key}:={_yaml(value)}"]
    executor = Proc(args, env, tmp / f"{name}-executor.log")
    config = {**script, "output": output, "topics": topics, "executor_pid": executor.pid,
              "executor": f"{prefix}/chunk_executor"}
    (tmp / f"{name}.json").write_text(json.dumps(config))
    out = tmp / f"{name}.jsonl"
    recorder = Proc([SCRIPT, str(tmp / f"{name}.json"), str(out)], env, tmp / f"{name}-script.log")
    try:
        assert recorder.wait(timeout) == 0, recorder.output()[-3000:] + executor.output()[-3000:]
        rc = executor.wait(15)              # every timeline SIGINTs the executor
    finally:
        recorder.stop()
        executor.stop()
    log = executor.log_path.read_text(errors="replace")
    assert rc == 0, log[-3000:]
    rec = defaultdict(list)
    for line in out.read_text().splitlines():
        item = json.loads(line)
        rec[item["topic"]].append(item)
    return rec, log, rc


def rows_of(rec) -> dict:
    """seq -> the chunk's actions [H, D] as the executor sees them (float32 on the wire)."""
    out = {}
    for s in rec["sent"]:
        flat = np.array([math.nan if v is None else v for v in s["flat"]], np.float32)
        out[s["seq"]] = flat.astype(np.float64)
    return out


def replay(rec, **queue_kwargs):
    """Check every tick that used the queue against a fresh ChunkQueue fed the recorded
    arrivals / clears; returns the number of ticks checked."""
    from oat_ros.chunks import Chunk, ChunkQueue

    rows = rows_of(rec)
    queue = ChunkQueue(**queue_kwargs)
    items = []
    for e in rec["event"]:
        if e["event"] == "accepted":
            actions = rows[e["seq"]].reshape(e["horizon"], -1)
            chunk = Chunk(e["stamp"], actions, e["n"], e["period"], e["seq"])
            items.append((e["arrival"], 0, chunk))
        elif e["event"] == "cleared":
            items.append((e["time"], 1, None))
    for a in rec["applied"]:
        items.append((a["stamp"], 2, a))
    checked = 0
    for t, kind, item in sorted(items, key=lambda x: (x[0], x[1])):
        if kind == 0:
            ok, reason = queue.add(item, t)
            assert ok, reason
        elif kind == 1:
            queue.clear()
        elif item["src"] in EXECUTED or item["src"] in ("hold", "blocked"):
            action, info = queue.next_action(t)
            if item["src"] == "hold":
                assert action is None, (t, item, info)
                continue
            assert action is not None, (t, item)
            assert info["seqs"] == item["seq"] and info["steps"] == item["i"], (info, item)
            np.testing.assert_allclose(item["action"], action, atol=1e-9)
            checked += 1
    return checked


def expected_action(item, rows) -> np.ndarray:
    """The documented merge: sum of w * row i of chunk seq (the weights the executor reports)."""
    dim = len(item["action"])
    return sum(w * rows[s].reshape(-1, dim)[i] for s, i, w in zip(item["seq"], item["i"], item["w"]))


def due_step(t, stamp) -> int:
    return math.floor((t - stamp) / P + 1e-3)


def accepted(rec) -> dict:
    return {e["seq"]: e for e in rec["event"] if e["event"] == "accepted"}


# ------------------------------------------------------------------------------------------
# twist: latest merge, delay compensation, rejections, stall -> hold -> watchdog, disable
# ------------------------------------------------------------------------------------------
def twist_rows(k, horizon=8, fast=False):
    rows = np.zeros((horizon, 7))
    rows[:, 0] = 0.1 + 0.02 * k + 0.002 * np.arange(horizon)
    rows[:, 1] = -0.05
    rows[:, 3] = 0.1
    rows[:, 6] = 1.0 if k % 2 == 0 else -1.0
    if fast:
        rows[:, :2] = 0.9
    return rows


def chunk_item(at, seq, rows, delay=0.12, n=4, dim=None):
    rows = np.asarray(rows, dtype=np.float64)
    return {"at": at, "chunk": {"seq": seq, "horizon": rows.shape[0], "n": n,
                                "dim": dim or rows.shape[1], "delay_s": delay,
                                "flat": [float(x) for x in rows.reshape(-1)]}}


TWIST_PARAMS = {"merge_rule": "latest", "hold_grace_s": 0.1, "watchdog_timeout_s": 0.8,
                "linear_scale_m": 0.05, "angular_scale_rad": 0.5, "max_linear_speed": 0.5,
                "max_angular_speed": 5.0, "command_frame": "panda_link0"}


def twist_script():
    nan_rows = twist_rows(5)
    nan_rows[2, 1] = math.nan
    far_rows = twist_rows(6)
    far_rows[1, 0] = 1.5
    timeline = [chunk_item(0.0, 0, twist_rows(0), delay=0.0),
                chunk_item(0.15, 1, twist_rows(1)),
                chunk_item(0.30, 2, twist_rows(2)),
                chunk_item(0.45, 3, twist_rows(3, fast=True), delay=0.02),
                chunk_item(0.60, 4, twist_rows(4)),
                chunk_item(0.75, 5, nan_rows),                       # NaN
                chunk_item(0.80, 6, far_rows),                       # |a| > action_limit
                chunk_item(0.85, 7, twist_rows(7)[:, :6]),           # action_dim 6
                chunk_item(0.90, 8, twist_rows(8), delay=0.5),       # older than seq 4
                # stall: nothing until 2.0 -> grace, hold, watchdog (0.6 + 0.8 s)
                chunk_item(2.00, 9, twist_rows(9), delay=0.05),
                chunk_item(2.15, 10, twist_rows(10)),
                chunk_item(2.30, 11, twist_rows(11)),
                {"at": 2.45, "enable": False},
                chunk_item(2.55, 12, twist_rows(12)),                # ignored: disabled
                chunk_item(2.70, 13, twist_rows(13)),
                {"at": 2.95, "enable": True},
                chunk_item(3.10, 14, twist_rows(14)),
                chunk_item(3.25, 15, twist_rows(15)),
                {"at": 3.30, "set": {"merge_rule": "bogus"}},
                {"at": 3.32, "set": {"hold_grace_s": -1.0}},
                {"at": 3.34, "set": {"control_rate_hz": 50.0}},
                {"at": 3.36, "set": {"max_linear_speed": 0.45}},   # no chunk is that fast
                {"at": 3.38, "set": {"workspace_max": [1.0, 1.0]}},
                {"at": 3.60, "sigint": True},
                {"at": 4.30, "end": True}]
    return {"timeline": timeline}


@pytest.fixture(scope="module")
def twist_run(tmp_path_factory):
    return run_scenario(tmp_path_factory.mktemp("twist"), "twist", "twist", TWIST_PARAMS,
                        twist_script())


def twist_of(action, max_lin=0.5):
    a = np.asarray(action)
    lin, ang = a[:3] * 0.05 / P, a[3:6] * 0.5 / P
    n = np.linalg.norm(lin)
    if n > max_lin:
        lin = lin * max_lin / n
    return lin, ang


def test_twist_values_rate_and_gripper(twist_run):
    rec, log, _ = twist_run
    rows = rows_of(rec)
    arm = {round(m["stamp"], 6): m for m in rec["arm"]}
    sent = [a for a in rec["applied"] if a["sent"]]
    assert len(arm) == len(rec["arm"]) == len(sent) > 40, log[-2000:]
    executed = [a for a in sent if a["src"] in EXECUTED]
    assert len(executed) > 25
    for a in executed:
        assert a["seq"] and len(a["seq"]) == 1                    # latest: one chunk at a time
        np.testing.assert_allclose(a["action"], expected_action(a, rows), atol=1e-5)
        m = arm[round(a["stamp"], 6)]
        lin, ang = twist_of(a["action"])
        np.testing.assert_allclose(m["linear"], lin, atol=1e-9)
        np.testing.assert_allclose(m["angular"], ang, atol=1e-9)
        assert m["frame_id"] == "panda_link0"
        assert a["gripper"] == (0.0 if a["action"][6] > 0 else 0.04)
        assert ("linear_speed" in a["limited"]) == (a["seq"] == [3])
    assert any(a["seq"] == [3] for a in executed)                 # the saturated chunk ran
    # the gripper topic gets the gripper position of every sent command, in order
    assert [g["data"] for g in rec["gripper"]] == [[a["gripper"]] for a in sent]
    # rate: one command per 50 ms while enabled
    stamps = np.array(sorted(m["stamp"] for m in rec["arm"]
                             if m["stamp"] < rec_time(rec, "enable_call")))
    gaps = np.diff(stamps)
    # the timer keeps its schedule: a late tick (shared CPU) is followed by an early one
    assert abs(gaps.mean() - P) < 0.1 * P, gaps
    assert abs(np.median(gaps) - P) < 0.01, gaps
    assert np.percentile(gaps, 95) < 2 * P, gaps


def rec_time(rec, topic, index=0):
    return rec[topic][index]["wall"]


def test_latest_merge_and_delay_compensation_give_the_documented_sequence(twist_run):
    rec, _, _ = twist_run
    acc = accepted(rec)
    assert replay(rec, merge="latest", hold_grace_s=0.1) > 25
    for a in rec["applied"]:
        if a["src"] == "chunk":
            seq, i = a["seq"][0], a["i"][0]
            assert i == due_step(a["stamp"], acc[seq]["stamp"])      # step = due time, by stamp
            assert 0 <= i < 4
            newest = max(s for s, e in acc.items() if e["arrival"] <= a["stamp"])
            assert seq == newest                                      # latest only
    # chunks computed 0.12 s before they arrive start at the step matching arrival, not at 0
    for seq in (1, 2, 4, 10, 11):
        e = acc[seq]
        assert e["start"] == due_step(e["arrival"], e["stamp"]) >= 2, e
        first = min(a["i"][0] for a in rec["applied"] if a["seq"][:1] == [seq])
        assert first >= e["start"]
    assert acc[0]["start"] == 0


def test_bad_chunks_are_rejected_with_a_reason(twist_run):
    rec, _, _ = twist_run
    reasons = {e["seq"]: e["reason"] for e in rec["event"] if e["event"] == "rejected"}
    assert set(reasons) == {5, 6, 7, 8}, reasons
    assert "non-finite" in reasons[5]
    assert "outside [-1, 1]" in reasons[6]
    assert "action_dim 6 != expected 7" in reasons[7]
    assert "not newer" in reasons[8]
    used = {s for a in rec["applied"] for s in a["seq"]}
    assert not used & {5, 6, 7, 8, 12, 13}
    for a in rec["applied"]:
        assert all(math.isfinite(x) for x in a["action"])
    for m in rec["arm"]:
        assert all(math.isfinite(x) for x in m["linear"] + m["angular"])
        assert np.linalg.norm(m["linear"]) <= 0.5 + 1e-9


def test_stalled_policy_holds_after_grace_then_watchdog(twist_run):
    rec, _, _ = twist_run
    acc = accepted(rec)
    last = acc[4]
    stall = [a for a in rec["applied"] if last["arrival"] < a["stamp"] < acc[9]["arrival"]]
    srcs = [a["src"] for a in stall]
    # chunk 4 runs its n = 4 steps, then its tail for hold_grace_s = 0.1 s (2 steps), then hold
    grace = [a for a in stall if a["src"] == "grace"]
    assert grace and {a["i"][0] for a in grace} <= {4, 5}
    hold_from = last["stamp"] + (4 + 2) * P
    for a in stall:
        if a["src"] in ("chunk", "grace"):
            assert a["stamp"] < hold_from + 1e-3
        else:
            assert a["src"] in ("hold", "watchdog") and a["stamp"] >= hold_from - 1e-3
    assert srcs.index("hold") > srcs.index("grace")
    # watchdog: no chunk for 0.8 s -> queue cleared, still holding, diagnostics ERROR
    watchdog = [a for a in stall if a["src"] == "watchdog"]
    assert watchdog and watchdog[0]["stamp"] >= last["arrival"] + 0.8
    assert all(a["stamp"] < last["arrival"] + 0.8 + 1e-3 for a in stall if a["src"] == "hold")
    # holding = zero twist + the last gripper command, streamed at the control rate
    arm = {round(m["stamp"], 6): m for m in rec["arm"]}
    last_gripper = [a for a in stall if a["src"] in ("chunk", "grace")][-1]["gripper"]
    held = [a for a in stall if a["src"] in ("hold", "watchdog")]
    assert len(held) >= 0.8 * (acc[9]["arrival"] - hold_from) / P
    for a in held:
        assert a["sent"] and a["gripper"] == last_gripper
        m = arm[round(a["stamp"], 6)]
        assert m["linear"] == [0.0] * 3 and m["angular"] == [0.0] * 3
    diags = [d for d in rec["diag"] if last["arrival"] < d["stamp"] < acc[9]["arrival"] + 0.2]
    assert any(d["level"] == 1 and d["message"].startswith("holding") for d in diags), diags
    assert any(d["level"] == 2 and d["message"].startswith("watchdog: no chunk for")
               for d in diags), diags
    assert any(e["event"] == "cleared" and e["reason"] == "watchdog" for e in rec["event"])
    # a fresh chunk resumes execution
    assert any(a["src"] == "chunk" and a["seq"] == [9] for a in rec["applied"])
    assert any(d["level"] == 0 and d["message"] == "executing" and d["stamp"] > acc[9]["arrival"]
               for d in rec["diag"])


def test_disable_stops_commands_and_enable_waits_for_a_fresh_chunk(twist_run):
    rec, _, _ = twist_run
    results = [r for r in rec["enable_result"]]
    assert [(r["data"], r["success"], r["message"]) for r in results] == [
        (False, True, "disabled"), (True, True, "enabled")]
    stop = [a for a in rec["applied"] if a["src"] == "disabled"]
    assert len(stop) == 1 and stop[0]["sent"]
    t_off = stop[0]["stamp"]
    arm = {round(m["stamp"], 6): m for m in rec["arm"]}
    assert arm[round(t_off, 6)]["linear"] == [0.0] * 3                 # one stop command
    acc = accepted(rec)
    resumed = acc[14]["arrival"]
    silent = [m for m in rec["arm"] if t_off < m["stamp"] < resumed]
    assert not silent, silent
    ignored = {e["seq"] for e in rec["event"] if e["event"] == "ignored"}
    assert {12, 13} <= ignored
    assert any(a["src"] == "chunk" and a["seq"] == [14] for a in rec["applied"])
    assert any(d["message"] == "disabled" for d in rec["diag"])


def test_parameter_changes_are_validated(twist_run):
    rec, _, _ = twist_run
    results = {r["name"]: r for r in rec["set_result"]}
    assert not results["merge_rule"]["successful"]
    assert "expected one of ['latest', 'blend', 'ensemble']" in results["merge_rule"]["reason"]
    assert not results["hold_grace_s"]["successful"]
    assert "out of range" in results["hold_grace_s"]["reason"]       # descriptor range
    assert not results["control_rate_hz"]["successful"]
    assert "read-only" in results["control_rate_hz"]["reason"]
    assert not results["workspace_max"]["successful"]
    assert "workspace_max: expected 3 values" in results["workspace_max"]["reason"]
    assert results["max_linear_speed"]["successful"]


def test_sigint_sends_a_stop_command_and_exits_cleanly(twist_run):
    rec, log, rc = twist_run
    assert rc == 0, log[-2000:]
    last = rec["applied"][-1]
    assert last["src"] == "shutdown" and last["sent"]
    assert rec["arm"][-1]["linear"] == [0.0] * 3 and rec["arm"][-1]["angular"] == [0.0] * 3


# ------------------------------------------------------------------------------------------
# joint_trajectory, absolute joints, blend
# ------------------------------------------------------------------------------------------
JOINTS = ["j1", "j2", "j3"]


def joint_rows(k, horizon=10):
    rows = np.zeros((horizon, 4))
    for j in range(3):
        rows[:, j] = 0.1 * j + 0.05 * k + 0.01 * np.arange(horizon)
    rows[:, 3] = -1.0 + 0.2 * k
    return rows


@pytest.fixture(scope="module")
def blend_run(tmp_path_factory):
    params = {"merge_rule": "blend", "hold_grace_s": 0.1, "joint_names": JOINTS,
              "joint_indices": [0, 1, 2], "gripper_index": 3, "action_dim": 4,
              "joint_lower_limits": [-1.0] * 3, "joint_upper_limits": [1.0] * 3,
              "max_joint_velocity": 5.0, "action_limit": 2.0, "gripper_binary": False,
              "gripper_open_position": 0.08, "gripper_closed_position": 0.0,
              "gripper_joint_count": 2, "watchdog_timeout_s": 2.0}
    oob = joint_rows(9)
    oob[3, 1] = 1.5
    timeline = [chunk_item(0.0, 0, joint_rows(0), delay=0.0, n=8),
                chunk_item(0.2, 1, joint_rows(1), delay=0.1, n=8),
                chunk_item(0.4, 2, joint_rows(2), delay=0.1, n=8),
                chunk_item(0.5, 9, oob, delay=0.05, n=8),            # joint limit
                chunk_item(0.55, 10, joint_rows(3), delay=0.05, n=11),  # n > horizon
                chunk_item(0.6, 3, joint_rows(3), delay=0.1, n=8),
                chunk_item(0.8, 4, joint_rows(4), delay=0.1, n=8),
                {"at": 1.6, "sigint": True}, {"at": 2.2, "end": True}]
    script = {"timeline": timeline,
              "joint_states": {"names": JOINTS + ["finger"], "positions": [0.0, 0.0, 0.0, 0.02]}}
    return run_scenario(tmp_path_factory.mktemp("blend"), "blend", "joint_trajectory", params,
                        script)


def test_joint_trajectory_stream_and_blend_weights(blend_run):
    rec, log, _ = blend_run
    rows = rows_of(rec)
    acc = accepted(rec)
    assert replay(rec, merge="blend", hold_grace_s=0.1) > 15
    sent = [a for a in rec["applied"] if a["sent"]]
    assert len(rec["arm"]) == len(sent) > 15, log[-2000:]
    blended = 0
    for a, m in zip(sent, rec["arm"]):           # one trajectory per applied tick, in order
        assert m["joint_names"] == JOINTS and len(m["points"]) == 1
        point = m["points"][0]
        assert point["tfs"] == pytest.approx(P) and point["velocities"] == []
        np.testing.assert_allclose(point["positions"], a["cmd"][:3], atol=1e-12)
        if a["src"] in EXECUTED:
            np.testing.assert_allclose(a["action"], expected_action(a, rows), atol=1e-5)
            np.testing.assert_allclose(point["positions"], a["action"][:3], atol=1e-9)
            g = 0.08 + (a["action"][3] + 1) / 2 * (0.0 - 0.08)
            assert a["gripper"] == pytest.approx(g)
        if a["src"] == "blend":
            blended += 1
            new = a["seq"][-1]
            e, prev = acc[new], acc[max(s for s in acc if s < new)]
            # overlap = the new chunk's steps from its start that are due before the previous
            # chunk's n = 8 used steps end; weight of the new chunk (k + 1) / (L + 1)
            prev_end = prev["stamp"] + 8 * P
            L = min(8, math.ceil((prev_end - e["stamp"]) / P - 1e-3)) - e["start"]
            k = a["i"][-1] - e["start"]
            assert 0 <= k < L and a["w"][-1] == pytest.approx((k + 1) / (L + 1), abs=1e-6)
            assert sum(a["w"]) == pytest.approx(1.0, abs=1e-5)
    assert blended >= 4
    assert [g["data"] for g in rec["gripper"]] == [[a["gripper"]] * 2 for a in sent]
    # after the last chunk: its tail for 0.1 s, then hold = the last target, re-sent each tick
    held = [a for a in sent if a["src"] == "hold"]
    assert held and all(a["cmd"] == held[0]["cmd"] for a in held)
    last_exec = [a for a in sent if a["src"] in EXECUTED][-1]
    assert held[0]["cmd"] == last_exec["cmd"]
    assert sent[-1]["src"] == "shutdown" and sent[-1]["cmd"] == last_exec["cmd"]


def test_joint_limit_and_bad_n_chunks_are_rejected(blend_run):
    rec, _, _ = blend_run
    reasons = {e["seq"]: e["reason"] for e in rec["event"] if e["event"] == "rejected"}
    assert set(reasons) == {9, 10}
    assert "joint target 1.5 of j2 at step 3 outside the joint limits [-1, 1]" in reasons[9]
    assert "n_action_steps 11 not in [1, horizon 10]" in reasons[10]
    for m in rec["arm"]:
        assert all(-1.0 <= x <= 1.0 for x in m["points"][0]["positions"])


# ------------------------------------------------------------------------------------------
# joint_trajectory, delta joints from the measured state, ensemble
# ------------------------------------------------------------------------------------------
Q0 = [0.3, -0.2, 0.1]


def delta_rows(k, horizon=8):
    rows = np.zeros((horizon, 3))
    for j in range(3):
        rows[:, j] = 0.02 * (j + 1) * (1 + 0.5 * k) + 0.003 * np.arange(horizon)
    return rows


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    params = {"merge_rule": "ensemble", "ensemble_m": 0.5, "joint_mode": "delta",
              "joint_scale": 0.5, "joint_names": JOINTS, "joint_indices": [0, 1, 2],
              "gripper_index": -1, "action_dim": 3, "joint_lower_limits": [-1.0] * 3,
              "joint_upper_limits": [1.0] * 3, "max_joint_velocity": 0.0,
              "trajectory_time_from_start_s": 0.2, "hold_grace_s": 0.0}
    timeline = [chunk_item(0.1 * k, k, delta_rows(k), delay=0.05, n=6) for k in range(7)]
    timeline += [{"at": 1.4, "sigint": True}, {"at": 2.0, "end": True}]
    script = {"timeline": timeline,
              "joint_states": {"names": list(reversed(JOINTS)), "positions": Q0[::-1],
                               "start_at": 0.3}}
    return run_scenario(tmp_path_factory.mktemp("ensemble"), "ensemble", "joint_trajectory",
                        params, script)


def test_delta_joints_wait_for_joint_state_then_integrate_from_it(ensemble_run):
    rec, log, _ = ensemble_run
    blocked = [a for a in rec["applied"] if a["src"] == "blocked"]
    assert blocked and all(not a["sent"] and "no joint state" in a["why"] for a in blocked)
    assert rec["applied"][0]["src"] == "blocked"                     # nothing sent before
    sent = [a for a in rec["applied"] if a["sent"]]
    assert len(rec["arm"]) == len(sent) > 10, log[-2000:]
    assert not rec["gripper"]
    for a, m in zip(sent, rec["arm"]):
        point = m["points"][0]
        assert point["tfs"] == pytest.approx(0.2)
        if a["src"] in EXECUTED:                                     # tick = step: q0 + 0.5 a
            np.testing.assert_allclose(point["positions"], np.array(Q0) + 0.5 * np.array(
                a["action"]), atol=1e-9)


def test_ensemble_weights_follow_act(ensemble_run):
    rec, _, _ = ensemble_run
    rows = rows_of(rec)
    assert replay(rec, merge="ensemble", ensemble_m=0.5) > 10
    multi = 0
    for a in rec["applied"]:
        if a["src"] in ("ensemble", "chunk", "blocked") and a["seq"]:
            n = len(a["seq"])
            w = np.exp(-0.5 * np.arange(n))
            np.testing.assert_allclose(a["w"], w / w.sum(), atol=1e-6)
            assert a["seq"] == sorted(a["seq"])                     # j = 0 is the oldest
            np.testing.assert_allclose(a["action"], expected_action(a, rows), atol=1e-5)
            multi += n >= 2
    assert multi >= 5


# ------------------------------------------------------------------------------------------
# pose: integrated target, workspace box, late_policy continue, policy heartbeat
# ------------------------------------------------------------------------------------------
def pose_rows():
    rows = np.zeros((8, 7))
    rows[:, 0], rows[:, 5], rows[:, 6] = 0.5, 0.2, -1.0
    return rows


@pytest.fixture(scope="module")
def pose_run(tmp_path_factory):
    params = {"late_policy": "continue", "workspace_min": [0.0, -0.5, 0.0],
              "workspace_max": [0.56, 0.5, 0.6], "max_linear_speed": 1.0,
              "max_angular_speed": 5.0, "command_frame": "panda_link0",
              "watchdog_timeout_s": 3.0, "policy_diagnostics_name": "{prefix}/fake_policy",
              "policy_diagnostics_timeout_s": 0.6}
    name = "{prefix}/fake_policy: OAT policy"
    timeline = [chunk_item(0.0, 0, pose_rows(), delay=0.0, n=4),
                {"at": 0.6, "diag": {"name": name, "level": 0, "message": "ok"}},
                {"at": 0.8, "diag": {"name": name, "level": 2, "message": "model crashed"}},
                chunk_item(0.85, 1, pose_rows(), delay=0.0, n=4),    # accepted, not executed
                {"at": 1.1, "diag": {"name": name, "level": 0, "message": "ok"}},
                chunk_item(1.15, 2, pose_rows(), delay=0.0, n=4),
                # the policy's status stops: no status for 0.6 s after 1.1 -> hold
                {"at": 2.0, "sigint": True}, {"at": 2.6, "end": True}]
    script = {"timeline": timeline,
              "eef_pose": {"position": [0.5, 0.0, 0.3], "quat": [0.0, 0.0, 0.0, 1.0],
                           "frame_id": "panda_link0"}}
    return run_scenario(tmp_path_factory.mktemp("pose"), "pose", "pose", params, script)


def test_pose_target_is_integrated_and_clamped_then_held(pose_run):
    rec, log, _ = pose_run
    arm = {round(m["stamp"], 6): m for m in rec["arm"]}
    sent = [a for a in rec["applied"] if a["sent"]]
    assert len(arm) == len(rec["arm"]) == len(sent) > 10, log[-2000:]
    t_error = rec["diag_sent"][1]["wall"]
    first = [a for a in sent if a["stamp"] < t_error]
    moving = [a for a in first if a["src"] in EXECUTED]
    # 8 steps (H = 8 with late_policy continue) at one tick per step; timer jitter may sample
    # a step twice or skip one
    assert 6 <= len(moving) <= 10, [(a["src"], a["i"], a["stamp"]) for a in first]
    assert {a["src"] for a in moving} == {"chunk", "continue"}       # steps 4..7: continue
    assert {a["i"][0] for a in moving if a["src"] == "continue"} <= {4, 5, 6, 7}
    for k, a in enumerate(moving, start=1):
        m = arm[round(a["stamp"], 6)]
        assert m["frame_id"] == "panda_link0"
        x = min(0.5 + 0.025 * k, 0.56)                               # 0.5 m/s * 50 ms, box
        np.testing.assert_allclose(m["position"], [x, 0.0, 0.3], atol=1e-9)
        yaw = 0.1 * k                                                # 2 rad/s * 50 ms
        np.testing.assert_allclose(m["quat"], [0, 0, math.sin(yaw / 2), math.cos(yaw / 2)],
                                   atol=1e-9)
        assert ("workspace" in a["limited"]) == (0.5 + 0.025 * k > 0.56)
        assert a["gripper"] == 0.04
    held = [arm[round(a["stamp"], 6)] for a in first if a["src"] == "hold"]
    assert held and first[-1]["src"] == "hold"
    last = arm[round(moving[-1]["stamp"], 6)]
    for m in held:
        assert m["position"] == last["position"] and m["quat"] == last["quat"]


def test_policy_status_error_and_silence_hold_the_robot(pose_run):
    rec, _, _ = pose_run
    t_error, t_ok = rec["diag_sent"][1]["wall"], rec["diag_sent"][2]["wall"]
    acc = accepted(rec)
    assert {0, 1, 2} <= set(acc)
    faulted = [a for a in rec["applied"] if t_error < a["stamp"] < t_ok]
    assert faulted and {a["src"] for a in faulted[2:]} == {"policy_error"}
    assert all("model crashed" in a["why"] for a in faulted if a["src"] == "policy_error")
    assert not any(a["seq"] == [1] for a in rec["applied"])           # cleared, never executed
    assert any(d["level"] == 2 and "model crashed" in d["message"] for d in rec["diag"])
    # after the OK status the next chunk runs again, continuing from the last target
    second = [a for a in rec["applied"] if a["seq"] == [2]]
    assert len(second) >= 5
    arm = {round(m["stamp"], 6): m for m in rec["arm"]}
    before = [m for m in rec["arm"] if m["stamp"] < second[0]["stamp"]][-1]
    yaw0 = 2 * math.atan2(before["quat"][2], before["quat"][3])
    for k, a in enumerate(second, start=1):
        q = arm[round(a["stamp"], 6)]["quat"]
        assert 2 * math.atan2(q[2], q[3]) == pytest.approx(yaw0 + 0.1 * k, abs=1e-9)
    # no status from the policy for 0.6 s: hold again, diagnostics ERROR
    silent = [a for a in rec["applied"] if a["src"] == "policy_error" and a["stamp"] > t_ok]
    assert silent and silent[0]["stamp"] >= t_ok + 0.6
    assert "no status from the policy" in silent[0]["why"]
    assert all(a["src"] != "chunk" for a in rec["applied"] if a["stamp"] > silent[0]["stamp"])
    assert any(d["level"] == 2 and "no status from the policy" in d["message"]
               for d in rec["diag"])


# ------------------------------------------------------------------------------------------
# parameters (no processes)
# ------------------------------------------------------------------------------------------
def test_parameter_table_defaults_are_valid_and_checks_cross_parameters():
    from oat_ros.ros.executor_node import PARAMS, check_parameters

    defaults = {p.name: p.default for p in PARAMS}
    assert check_parameters(defaults) is None
    assert "control_rate_hz" in check_parameters({**defaults, "control_rate_hz": 0.0})
    why = check_parameters({**defaults, "output": "joint_trajectory", "joint_indices": [0, 1]})
    assert "joint_indices has 2 entries for 7 joint_names" in why
    why = check_parameters({**defaults, "gripper_index": 2})
    assert "mapped twice" in why
    assert "expected finite" in check_parameters({**defaults, "workspace_min": [math.nan] * 3})
    assert all(p.description for p in PARAMS)


def test_readme_documents_every_executor_parameter():
    readme = (REPO / "README.md").read_text()
    if "## chunk_executor" not in readme:
        pytest.skip("README.md has no '## chunk_executor' section yet")
    from oat_ros.ros.executor_node import PARAMS

    section = readme.split("## chunk_executor", 1)[1]
    missing = [p.name for p in PARAMS if f"`{p.name}`" not in section]
    assert not missing, f"README.md (chunk_executor) does not document: {missing}"
