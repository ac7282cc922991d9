"""The LIBERO sim bridge as real processes: a bridge + a scripted policy/recorder
(test/sim_scripts/scripted_policy.py), each scenario on its own ROS_DOMAIN_ID.

One lockstep run (libero_object, small max_steps) is shared by the lockstep tests:
  ep0 normal chunks · ep1 bad chunks (NaN, action_dim 6, short) · ep2 ~/force_success ·
  ep3 ~/next_episode · ep4 rejected + accepted parameter changes, ~/reset selects task 1 ·
  ep5 (task 1 init 5) · ep6 (task 1 init 6) policy timeout, then exit_when_done.
"""
import json
import signal
from collections import defaultdict

import numpy as np
import pytest

from ros_testing import Proc, next_domain_id, ros_env, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.libero]

P_MS = 50                      # control period in ms
N, H = 4, 8                    # scripted chunks: n_action_steps, horizon
START, END, ABORT = 0, 1, 2
LOCKSTEP_SCRIPT = {
    "horizon": H, "n_action_steps": N,
    "bad": {"1:0": "nan", "1:1": "dim6", "1:2": "short"},
    "actions": {
        "2:1": [{"service": "force_success"}],
        "3:0": [{"service": "next_episode"}],
        "4:0": [{"set": {"suite": "bogus"}}, {"set": {"task_index": 99}},
                {"set": {"task_indices": [1], "init_states": [5, 6], "max_steps": 8,
                         "episodes": []}},
                {"service": "reset"}],
        "6:0": [{"set": {"chunk_timeout_s": 1.0}}],          # and no answer
    },
}


def ms(stamp):
    return int(round(stamp * 1000))


def load(path):
    by_topic = defaultdict(list)
    for line in open(path):
        rec = json.loads(line)
        by_topic[rec["topic"]].append(rec)
    return by_topic


def start_pair(tmp, script_cfg, bridge_args, name):
    env = ros_env(next_domain_id())
    (tmp / f"{name}.json").write_text(json.dumps(script_cfg))
    rec = tmp / f"{name}.jsonl"
    policy = Proc(["test/sim_scripts/scripted_policy.py", str(tmp / f"{name}.json"), str(rec)],
                  env, tmp / f"{name}-policy.log")
    bridge = Proc(["-m", "sim_bridge.bridge_node", "--ros-args",
                   "-p", "suite:=libero_object", "-p", "settle_steps:=4",
                   "-p", "wait_for_policy_s:=120.0", *bridge_args],
                  env, tmp / f"{name}-bridge.log")
    return bridge, policy, rec


@pytest.fixture(scope="module")
def lockstep_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lockstep")
    bridge, policy, rec = start_pair(tmp, LOCKSTEP_SCRIPT, [
        "-p", "max_steps:=12", "-p", "exit_when_done:=true", "-p", "run_id:=test-run",
        "-p", "episodes:=['0:0','0:1','0:2','0:3','0:4']"], "lockstep")
    try:
        rc = bridge.wait(240)
    finally:
        bridge.stop()
        policy.stop()
    log = bridge.log_path.read_text(errors="replace")
    assert rc == 0, log[-3000:]
    return load(rec), log


def episodes(rec):
    out = defaultdict(dict)
    for e in rec["episode"]:
        out[e["episode_index"]][{START: "start", END: "end", ABORT: "abort"}[e["event"]]] = e
    return out


def in_episode(rec, topic, index):
    """Records of `topic` whose stamp lies in episode `index` (START stamp .. END/ABORT)."""
    ep = episodes(rec)[index]
    lo, hi = ms(ep["start"]["stamp"]), ms((ep.get("end") or ep["abort"])["stamp"])
    return [r for r in rec[topic] if lo <= ms(r["stamp"]) <= hi]


def test_episode_sequence(lockstep_run):
    rec, _ = lockstep_run
    eps = episodes(rec)
    assert sorted(eps) == list(range(7))
    outcome = {i: (e.get("end") or e["abort"]) for i, e in eps.items()}
    assert [(outcome[i]["event"], outcome[i]["reason"]) for i in range(7)] == [
        (END, "timeout"), (END, "timeout"), (END, "success"), (ABORT, "next_episode"),
        (ABORT, "reset"), (END, "timeout"), (ABORT, "policy_timeout")]
    starts = [eps[i]["start"] for i in range(7)]
    assert [(s["task_index"], s["init_state_index"], s["max_steps"]) for s in starts] == [
        (0, 0, 12), (0, 1, 12), (0, 2, 12), (0, 3, 12), (0, 4, 12), (1, 5, 8), (1, 6, 8)]
    assert {s["run_id"] for s in starts} == {"test-run"}
    assert starts[0]["task_uid"] == 10 and starts[5]["task_uid"] == 11
    assert "alphabet soup" in starts[0]["language"] and "cream cheese" in starts[5]["language"]
    assert outcome[0]["step"] == 12 and outcome[0]["chunks_executed"] == 3
    assert not outcome[0]["success"] and outcome[2]["success"]
    assert outcome[5]["step"] == 8 and outcome[5]["chunks_executed"] == 2


def test_observations_share_sim_time_stamps(lockstep_run):
    rec, _ = lockstep_run
    joints = [ms(r["stamp"]) for r in rec["joint_states"]]
    assert joints == sorted(set(joints)) and len(joints) > 60
    assert set(np.diff(joints)) == {P_MS}                     # one observation per 0.05 s step
    assert [ms(r["stamp"]) for r in rec["eef_pose"]] == joints
    assert [ms(r["stamp"]) for r in rec["clock"]] == joints
    images = defaultdict(set)
    for img in rec["image"]:
        assert (img["height"], img["width"], img["encoding"]) == (128, 128, "rgb8")
        images[img["frame_id"]].add(ms(img["stamp"]))
    assert set(images) == {"agentview", "robot0_eye_in_hand"}
    assert images["agentview"] == images["robot0_eye_in_hand"] <= set(joints)
    rendered = images["agentview"]
    for a in rec["applied"]:                     # rendered only for the 2 steps before requests
        if a["info"]["src"] == "lockstep" and a["info"]["i"][0] < N - 2:
            assert ms(a["stamp"]) + P_MS not in rendered
    assert len(rendered) < 0.6 * len(joints)
    for req in rec["request"]:                                 # 2 consecutive observations
        t = ms(req["stamp"])
        assert {t, t - P_MS} <= images["agentview"] and t in joints, t
    js = rec["joint_states"][0]
    assert js["name"] == [f"robot0_joint{i}" for i in range(1, 8)] + [
        "robot0_finger_joint1", "robot0_finger_joint2"]
    assert len(js["position"]) == len(js["velocity"]) == 9
    assert rec["eef_pose"][0]["frame_id"] == "world"
    quat = np.array(rec["eef_pose"][0]["quat"])
    assert abs(np.linalg.norm(quat) - 1) < 1e-6
    # upright (flipped) images: the eye-in-hand camera sees its dark fingers at the bottom
    hand = [i for i in rec["image"] if i["frame_id"] == "robot0_eye_in_hand"]
    assert np.mean([i["top_mean"] - i["bottom_mean"] for i in hand]) > 20


def test_lockstep_executes_exactly_n_action_steps(lockstep_run):
    rec, _ = lockstep_run
    sent = {c["seq"]: c for c in rec["sent_chunk"] if c["kind"] == "good"}
    by_seq = defaultdict(list)
    for a in rec["applied"]:
        if a["info"]["src"] == "lockstep":
            by_seq[a["info"]["seq"][0]].append(a)
    assert set(by_seq) <= set(sent) and len(by_seq) >= 8
    for seq, applied in by_seq.items():
        chunk = sent[seq]
        steps = [a["info"]["i"][0] for a in applied]
        stamps = [ms(a["stamp"]) for a in applied]
        assert stamps[0] == ms(chunk["stamp"])                 # step 0 at the request time
        assert steps == list(range(len(steps))) and np.all(np.diff(stamps) == P_MS)
        rows = np.float32(chunk["actions"])[: len(steps)]
        np.testing.assert_array_equal(np.float32([a["action"] for a in applied]), rows)
        # exactly n steps unless the episode ended inside the chunk
        ep_end = min(ms(e["stamp"]) for e in rec["episode"] if e["event"] != START
                     and ms(e["stamp"]) > stamps[0])
        assert len(steps) == N or stamps[-1] + P_MS == ep_end, (seq, steps)
    # the arm moves along +x as commanded (dim 0 = 0.1 .. 0.13) during episode 0
    poses = in_episode(rec, "eef_pose", 0)
    assert poses[-1]["position"][0] - poses[0]["position"][0] > 0.01


def test_bad_chunks_rejected_and_robot_holds(lockstep_run):
    rec, log = lockstep_run
    reasons = [r["reason"] for r in rec["rejected"]]
    assert any("non-finite" in r for r in reasons)
    assert any("action_dim 6 != expected 7" in r for r in reasons)
    assert any("len(actions)" in r for r in reasons)
    assert "rejected chunk" in log
    bad = {ms(c["stamp"]) for c in rec["sent_chunk"] if c["kind"] != "good"}
    assert len(bad) == 3
    applied = {ms(a["stamp"]): a for a in rec["applied"]}
    for t in bad:
        assert applied[t]["info"]["src"] == "hold"
        assert applied[t]["action"] == [0.0] * 6 + [-1.0]
    assert all(np.isfinite(a["action"]).all() for a in rec["applied"])
    end = episodes(rec)[1]["end"]
    assert end["step"] == 12 and end["chunks_executed"] == 3   # 3 holds + 4 + 4 + 1 steps


def test_force_success_ends_episode_as_success(lockstep_run):
    rec, _ = lockstep_run
    result = [r for r in rec["service_result"] if r["service"] == "force_success"]
    assert result and result[0]["success"]
    end = episodes(rec)[2]["end"]
    # forced after the first chunk: success at once ('in' basket) or after <= 20 hold steps
    assert end["success"] and end["reason"] == "success" and N <= end["step"] < 12
    forced = [a for a in in_episode(rec, "applied", 2) if a["info"]["src"] == "forced"]
    assert len(forced) == end["step"] - N


def test_parameters_validated_and_reset_selects_task(lockstep_run):
    rec, log = lockstep_run
    results = rec["set_result"]
    assert [r["successful"] for r in results[:3]] == [[False], [False], [True, True, True, True]]
    assert "suite 'bogus'" in results[0]["reasons"][0]
    assert "task_index 99" in results[1]["reasons"][0]
    assert "parameter change rejected" in log
    eps = episodes(rec)
    assert eps[3]["abort"]["step"] == 0 and eps[4]["abort"]["step"] == 0
    assert eps[5]["start"]["task_name"].startswith("pick_up_the_cream_cheese")


def test_policy_timeout_aborts(lockstep_run):
    rec, _ = lockstep_run
    abort = episodes(rec)[6]["abort"]
    assert abort["reason"] == "policy_timeout" and abort["step"] == 0


def test_realtime_blend_delay_compensation_and_sigint(tmp_path):
    script = {"horizon": 12, "n_action_steps": 8, "delay_s": 0.12}
    bridge, policy, rec_path = start_pair(tmp_path, script, [
        "-p", "clock_mode:=realtime", "-p", "merge_rule:=blend", "-p", "cameras:=[]",
        "-p", "max_steps:=400"], "realtime")
    try:
        def enough():
            if bridge.popen.poll() is not None:
                return True
            try:
                lines = rec_path.read_text().count('"src": "blend"')
            except FileNotFoundError:
                return False
            return lines >= 12
        wait_for(enough, timeout=180, interval=0.5, what="blended steps")
        assert bridge.popen.poll() is None, bridge.output()[-3000:]
        bridge.popen.send_signal(signal.SIGINT)
        rc = bridge.wait(30)
        wait_for(lambda: '"event": 2' in rec_path.read_text(), timeout=10, what="ABORT")
    finally:
        bridge.stop()
        policy.stop()
    assert rc == 0, bridge.log_path.read_text(errors="replace")[-3000:]
    rec = load(rec_path)
    assert not rec["image"]                                        # cameras:=[]
    aborts = [e for e in rec["episode"] if e["event"] == ABORT]
    assert [a["reason"] for a in aborts] == ["shutdown"]
    sent = {c["seq"]: c for c in rec["sent_chunk"]}
    first_index = {}
    blended = 0
    for a in rec["applied"]:
        info = a["info"]
        if info["src"] in ("settle", "hold"):
            if info["src"] == "hold":
                assert a["action"] == [0.0] * 6 + [-1.0]
            continue
        expected = np.zeros(7)
        for seq, i, w in zip(info["seq"], info["i"], info["w"]):
            chunk = sent[seq]
            # delay compensation: the step index always matches its due time
            assert i == (ms(a["stamp"]) - ms(chunk["stamp"])) // P_MS and 0 <= i < 8
            first_index.setdefault(seq, i)
            expected += w * np.float32(chunk["actions"][i])
        np.testing.assert_allclose(a["action"], expected, atol=1e-5)
        if info["src"] == "blend":
            blended += 1
            assert len(info["w"]) == 2 and abs(sum(info["w"]) - 1) < 1e-5
            assert 0 < info["w"][1] < 1
    assert blended >= 12
    # chunks answered 0.12 s late start at the step matching their arrival, not at step 0
    # (step 0 only if the sim was starved before that step began: still correct)
    later = [i for seq, i in first_index.items() if seq > min(first_index)]
    assert later and sum(i >= 1 for i in later) >= len(later) / 2, later
