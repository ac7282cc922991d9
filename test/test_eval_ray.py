"""Ray backend and sharding of the evaluation runner, on a local 2-CPU Ray cluster bound to 127.0.0.1.

Small evaluations (one task, 2-3 init states, 20-40 steps, the tiny policy): Ray and local runs
give the same per-episode outcomes (lockstep, greedy decoding, fixed init states), two shards
merged equal the unsharded run, a killed Ray worker's episode is retried and counted once, an
always-failing episode is reported with its error, and an interrupted driver resumes.
"""
import json
import os
import signal
import subprocess
import sys

import pytest

from ros_testing import next_domain_id, wait_for

pytest.importorskip("ray")
pytestmark = [pytest.mark.ros, pytest.mark.libero]

TASK = ["--suite", "libero_object", "--tasks", "0", "--setting", "ar:K=8"]
RUNNER = [sys.executable, "-m", "oat_ros.eval.runner"]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    sys.path.insert(0, "test/node_scripts")
    from tiny_policy import make_tiny_policy
    return str(make_tiny_policy(tmp_path_factory.mktemp("policy")))


def ray_args(domain):
    """A local Ray cluster with 2 CPUs; the graphs take ROS_DOMAIN_IDs from a pool of two."""
    other = next_domain_id()
    while other == domain:
        other = next_domain_id()
    return ["--backend", "ray", "--ray-num-cpus", "2", "--ros-domains", f"{domain},{other}"]


def run(args, env, timeout=400):
    proc = subprocess.run(RUNNER + args, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def jobs(out):
    return json.loads((out / "reports" / "jobs.json").read_text())


def outcomes(out) -> dict:
    """{job id: its episode's outcome from the bag} for the complete jobs."""
    return {j["job"]: j["outcome"] for j in jobs(out)["jobs"] if j["status"] == "complete"}


def episodes_in_bags(out) -> dict:
    """{job dir: [(run_id, status)]} read from every job's bag: exactly one episode each, its own."""
    from oat_ros.eval import bags
    found = {}
    for bag in sorted((out / "runs").glob("*/*/bag")):
        data = bags.load([bag], repair=False)
        found[f"{bag.parent.parent.name}/{bag.parent.name}"] = [(e.run_id, e.status) for e in data.episodes]
    return found


def assert_one_episode_per_job(out, n):
    found = episodes_in_bags(out)
    assert len(found) == n, found
    for job, eps in found.items():
        assert eps == [(job.replace("/", "_"), "failure")] or eps == [(job.replace("/", "_"), "success")], (job, eps)


def test_ray_equals_local_and_merged_shards_equal_unsharded(tmp_path, ros_domain, policy):
    """The unsharded run on Ray (2 graphs at once) and the same work list run locally as two
    shards, merged by --report-only: the same episodes with the same outcomes, in the bags."""
    domain, env = ros_domain
    common = TASK + ["--init-states", "0-1", "--max-steps", "20", "--policy", policy]
    local, ray_out = tmp_path / "local", tmp_path / "ray"

    for i in (0, 1):
        rc, log = run(common + ["--out", str(local), "--shard", f"{i}/2"], env)
        assert rc == 0, log
        assert f"1 episodes in shard {i}/2 (0 already complete, 1 to run)" in log
    assert not (local / "reports").exists()                 # a shard writes no reports
    rc, log = run(common + ["--out", str(local), "--report-only"], env)
    assert rc == 0, log
    assert "2 episodes: 2 complete, 0 failed, 0 not run" in log

    rc, log = run(common + ray_args(domain) + ["--out", str(ray_out)], env)
    assert rc == 0, log
    assert "2 episodes (0 already complete, 2 to run)" in log
    assert "ray backend (local cluster on 127.0.0.1" in log and "2 workers" in log
    assert "2 episodes: 2 complete, 0 failed, 0 not run" in log

    a, b = outcomes(local), outcomes(ray_out)
    assert len(a) == 2 and a == b                            # same per-episode outcomes, trajectory included
    assert all(o["final_eef_pos"] and o["steps"] == 20 for o in a.values())
    workers = [json.loads((ray_out / "runs" / j / "worker.json").read_text()) for j in b]
    assert {w["backend"] for w in workers} == {"ray"}
    assert len({w["ros_domain_id"] for w in workers}) == 2   # the two graphs ran at once, apart
    for out in (local, ray_out):
        assert_one_episode_per_job(out, 2)
    ra = json.loads((local / "reports" / "ar-K8" / "report.json").read_text())
    rb = json.loads((ray_out / "reports" / "ar-K8" / "report.json").read_text())
    assert ra["success"]["overall"] == rb["success"]["overall"] and rb["success"]["overall"]["n"] == 2
    assert ra["episodes"] == rb["episodes"]


def test_killed_ray_worker_is_retried_and_failing_episode_reported(tmp_path, ros_domain, policy):
    domain, env = ros_domain
    out = tmp_path / "eval"
    # init state 50 does not exist: the sim bridge refuses it, every attempt
    cmd = RUNNER + TASK + ["--init-states", "0,1,50", "--max-steps", "40", "--policy", policy,
                           "--max-retries", "1", "--out", str(out)] + ray_args(domain)
    log_path = tmp_path / "driver.log"
    with open(log_path, "w") as log:
        driver = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def running_episode():       # a job whose episode has started (not the bad one)
            for d in (out / "runs" / "ar-K8").glob("libero_object-t00-i0[01]-s0"):
                bridge = d / "logs" / "sim_bridge.log"
                if bridge.exists() and "START" in bridge.read_text(errors="replace") \
                        and (d / "worker.json").exists():
                    return d
            return None
        victim = wait_for(running_episode, timeout=240, what="an episode to start")
        pid = json.loads((victim / "worker.json").read_text())["pid"]
        assert pid != driver.pid
        os.kill(pid, signal.SIGKILL)                         # the Ray worker running that episode
        rc = driver.wait(timeout=400)
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGINT)
            driver.wait(timeout=60)
    text = log_path.read_text(errors="replace")
    assert rc == 1, text                                     # one episode failed for good
    assert f"{victim.parent.name}/{victim.name}: attempt 1 failed, retrying: Ray worker died (WorkerCrashedError)" in text
    status = {j["job"]: j for j in jobs(out)["jobs"]}
    assert jobs(out)["counts"] == {"complete": 2, "failed": 1, "missing": 0}
    killed = json.loads((victim / "job.json").read_text())
    assert killed["status"] == "complete" and killed["attempts"] == 2
    bad = status["ar-K8/libero_object-t00-i50-s0"]
    assert bad["status"] == "failed" and bad["attempts"] == 2
    assert "init_state_index 50 not in [-1, 49]" in bad["error"]
    assert "failed: ar-K8/libero_object-t00-i50-s0 (after 2 attempts)" in text
    report = json.loads((out / "reports" / "ar-K8" / "report.json").read_text())
    assert report["success"]["overall"]["n"] == 2            # the killed episode counted once
    found = episodes_in_bags(out)
    assert found.pop("ar-K8/libero_object-t00-i50-s0", []) == []
    assert sorted(found) == ["ar-K8/libero_object-t00-i00-s0", "ar-K8/libero_object-t00-i01-s0"]
    for job, eps in found.items():
        assert eps == [(job.replace("/", "_"), "failure")], (job, eps)


def test_interrupted_ray_driver_resumes_without_duplicates(tmp_path, ros_domain, policy):
    domain, env = ros_domain
    out = tmp_path / "eval"
    cmd = RUNNER + TASK + ["--init-states", "0-1", "--max-steps", "20", "--policy", policy,
                           "--workers", "1", "--out", str(out)] + ray_args(domain)
    log_path = tmp_path / "driver.log"
    with open(log_path, "w") as log:
        driver = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        first = wait_for(lambda: sorted((out / "runs").glob("*/*/complete.json")), timeout=240,
                         what="the first episode to complete")
        driver.send_signal(signal.SIGINT)                    # Ctrl-C on the driver only
        rc = driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    text = log_path.read_text(errors="replace")
    assert rc == 130, text
    assert "interrupted: run the same command again to resume" in text
    done = sorted((out / "runs").glob("*/*/complete.json"))
    assert len(done) == 1 and done == first
    stamp = done[0].stat().st_mtime_ns
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 episodes (1 already complete, 1 to run)" in proc.stdout
    assert "2 episodes: 2 complete, 0 failed, 0 not run" in proc.stdout
    assert done[0].stat().st_mtime_ns == stamp                # the complete episode was not redone
    report = json.loads((out / "reports" / "ar-K8" / "report.json").read_text())
    assert report["success"]["overall"]["n"] == 2 and report["episodes"]["total"] == 2
    assert_one_episode_per_job(out, 2)


def test_local_ray_cluster_listens_on_loopback_only(ros_domain):
    _, env = ros_domain
    code = """
import psutil, ray
from oat_ros.eval.ray_backend import init_ray
init_ray(num_cpus=1)
@ray.remote(num_cpus=1)
def pid():
    import os
    return os.getpid()
ray.get(pid.remote())
me = psutil.Process()
pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
bound = [(c.laddr.ip, c.laddr.port, c.pid) for c in psutil.net_connections("inet")
         if c.pid in pids and (c.status == psutil.CONN_LISTEN or not c.raddr)]
ray.shutdown()
print("BOUND", bound)
bad = [b for b in bound if b[0] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
assert bound and not bad, bad
"""
    env = dict(env, RAY_ADDRESS="127.0.0.1:1")           # must be ignored: a new local cluster starts
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
