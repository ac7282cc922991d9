"""The evaluation runner: episode work list, shards, graph isolation, real sim-graph runs (LIBERO),
resume, reports from bags. (The Ray backend: test_eval_ray.py.)"""
import json
import os
import subprocess
import sys

import pytest

from oat_ros.eval.runner import (MARKER_ENV, DecodeSetting, DomainPool, bringup_command, failure_reason,
                                 is_complete, job_marker, job_status, marked_pids, parse_range,
                                 parse_shard, shard, stop_marked, work_list)
from ros_testing import wait_for


def test_settings_and_ranges_parse():
    s = DecodeSetting.parse("blockwise:P=4:r=2")
    assert s.label == "blockwise-P4-r2"
    assert dict(s.params) == {"decode_mode": "blockwise", "prefix_len": "4", "refine_iters": "2"}
    assert dict(DecodeSetting.parse("ar:K=4:deadline=30").params)["deadline_ms"] == "30"
    assert parse_range("0-2,5") == [0, 1, 2, 5]
    assert parse_range("-1") == [-1] and parse_range("-1,3") == [-1, 3]
    with pytest.raises(ValueError, match="beam"):
        DecodeSetting.parse("beam:K=2")
    with pytest.raises(ValueError, match="Q=1"):
        DecodeSetting.parse("ar:Q=1")
    with pytest.raises(ValueError):
        parse_range("a-b")
    jobs = work_list([DecodeSetting.parse("ar:K=8"), DecodeSetting.parse("ar:K=1")], "libero_object", [0, 3], [0, 1], 0)
    assert [j.name for j in jobs] == [
        "ar-K8/libero_object-t00-i00-s0", "ar-K8/libero_object-t00-i01-s0",
        "ar-K8/libero_object-t03-i00-s0", "ar-K8/libero_object-t03-i01-s0",
        "ar-K1/libero_object-t00-i00-s0", "ar-K1/libero_object-t00-i01-s0",
        "ar-K1/libero_object-t03-i00-s0", "ar-K1/libero_object-t03-i01-s0"]
    seeded = work_list([DecodeSetting.parse("ar:K=8")], "libero_goal", [2], [-1], 300, seeds=[7, 8])
    assert [j.name for j in seeded] == ["ar-K8/libero_goal-t02-i-1-s7", "ar-K8/libero_goal-t02-i-1-s8"]
    assert seeded[0].run_id == "ar-K8_libero_goal-t02-i-1-s7" and seeded[0].key == ("libero_goal", 2, -1, 7)
    with pytest.raises(ValueError, match="twice"):
        work_list([DecodeSetting.parse("ar:K=8")], "libero_goal", [2], [0, 0], 0)


def test_shards_split_the_work_list_deterministically():
    jobs = work_list([DecodeSetting.parse("ar:K=8"), DecodeSetting.parse("ar:K=2")], "libero_object",
                     [0, 1, 2], [0, 1, 2, 3, 4], 0)
    for n in (1, 2, 3, 7, 40):
        parts = [shard(jobs, i, n) for i in range(n)]
        assert sorted(j.name for p in parts for j in p) == sorted(j.name for j in jobs)   # disjoint, complete
        assert max(map(len, parts)) - min(map(len, parts)) <= 1                          # balanced
        assert parts == [shard(list(jobs), i, n) for i in range(n)]                      # deterministic
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_bringup_command_runs_one_episode(tmp_path):
    job = work_list([DecodeSetting.parse("blockwise:P=4:r=2")], "libero_goal", [3], [7], 50, seeds=[5])[0]
    cmd = bringup_command(tmp_path, job, "/p", ["sim_bridge.clock_mode=lockstep"])
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    assert cmd[1:5] == ["-m", "oat_ros.ros.bringup", "sim", "--main-job"]
    assert cmd[cmd.index("--run-dir") + 1] == str(tmp_path / "runs" / job.name)
    for s in ("sim_bridge.suite=libero_goal", "sim_bridge.task_indices=[3]", "sim_bridge.init_states=[7]",
              "sim_bridge.num_episodes=1", "sim_bridge.seed=5", "sim_bridge.max_steps=50",
              f"sim_bridge.run_id={job.run_id}", "policy_node.decode_mode=blockwise",
              "policy_node.prefix_len=4", "policy_node.refine_iters=2", "policy_node.policy_path=/p"):
        assert s in sets
    assert sets[-1] == "sim_bridge.clock_mode=lockstep"      # --set comes last: it wins


def test_domain_pool_gives_each_running_graph_its_own_id(tmp_path):
    pool = DomainPool([41, 42], lock_dir=tmp_path)
    a, fa = pool.acquire()
    b, fb = pool.acquire()
    assert {a, b} == {41, 42}
    with pytest.raises(RuntimeError, match="no free ROS_DOMAIN_ID"):
        pool.acquire(timeout=0.3)
    fa.close()                                                # released (also when its holder dies)
    c, fc = pool.acquire(timeout=1)
    assert c == a
    fb.close()
    fc.close()


def test_leftover_processes_of_a_job_are_found_and_stopped(tmp_path):
    marker = job_marker(tmp_path / "job")
    env = dict(os.environ, **{MARKER_ENV: marker})
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        wait_for(lambda: marked_pids(marker) == [child.pid], timeout=10, what="the marked child")
        assert stop_marked(marker, timeout=5) == 0            # SIGINT was enough
        assert child.wait(timeout=5) != 0 and other.poll() is None
    finally:
        for p in (child, other):
            p.kill()
            p.wait()


def test_failure_reason_names_the_node_and_its_error(tmp_path):
    log = tmp_path / "bringup.log"
    log.write_text("[bringup] started recorder, policy_node, sim_bridge; logs in X\n"
                   "[bringup] sim_bridge exited with code 2:\n"
                   "sim_bridge: bad parameters: init_state_index 50 not in [-1, 49]\n\n"
                   "=== oat_ros main job summary ===\nprofile: sim   wall time: 6.5 s   logs: X\n"
                   "  node recorder        exit code 0\n  node sim_bridge      exit code 2\n"
                   "  episodes: 0 (0 completed, 0 aborted, 0 without END)   success: 0/0 = -\n")
    why = failure_reason(log, 1)
    assert why.startswith("exit code 1, episode not complete: [bringup] sim_bridge exited with code 2")
    assert "init_state_index 50 not in [-1, 49]" in why and "node sim_bridge exit code 2" in why
    assert "node recorder" not in why


def test_missing_job_is_neither_complete_nor_failed(tmp_path):
    job = work_list([DecodeSetting.parse("ar:K=8")], "libero_object", [0], [0], 20)[0]
    assert not is_complete(tmp_path, job)
    assert job_status(tmp_path, job)["status"] == "missing"
    (tmp_path / "runs" / job.name / "bag").mkdir(parents=True)
    (tmp_path / "runs" / job.name / "complete.json").write_text("{}")   # a marker without a bag
    assert not is_complete(tmp_path, job)


@pytest.mark.ros
@pytest.mark.libero
def test_runner_records_one_bag_per_episode_resumes_and_reports(tmp_path, ros_domain):
    sys.path.insert(0, "test/node_scripts")
    from tiny_policy import make_tiny_policy
    policy = make_tiny_policy(tmp_path / "policy")
    _, env = ros_domain
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "oat_ros.eval.runner", "--suite", "libero_object", "--tasks", "0",
           "--init-states", "0-1", "--setting", "ar:K=8", "--setting", "ar:K=2", "--max-steps", "20",
           "--policy", str(policy), "--out", str(out)]
    first = subprocess.run(cmd + ["--limit", "1", "--no-reports"], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "4 episodes (0 already complete, 1 to run)" in first.stdout
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "4 episodes (1 already complete, 3 to run)" in second.stdout   # resumed, nothing redone
    assert "4 episodes: 4 complete, 0 failed, 0 not run" in second.stdout
    for label, tokens in (("ar-K8", 8), ("ar-K2", 2)):
        report = json.loads((out / "reports" / label / "report.json").read_text())
        assert report["success"]["overall"]["n"] == 2          # both init states, from the bags alone
        assert report["tokens"]["histogram"]["mean"] == tokens   # the setting reached the policy node
        for init in (0, 1):
            job = out / "runs" / label / f"libero_object-t00-i0{init}-s0"
            assert (job / "bag").is_dir() and (job / "complete.json").is_file()
            record = json.loads((job / "job.json").read_text())
            assert record["status"] == "complete" and record["attempts"] == 1 and record["backend"] == "local"
    statuses = json.loads((out / "reports" / "jobs.json").read_text())
    assert statuses["counts"] == {"complete": 4, "failed": 0, "missing": 0}
    comparison = json.loads((out / "reports" / "ar-K8_vs_ar-K2" / "comparison.json").read_text())
    assert comparison["paired"]["overall"]["n_pairs"] == 2     # paired by (task, init state)
