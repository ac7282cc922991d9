"""Evaluation throughput: episodes per minute, local backend vs Ray with 1 and 2 workers (JSON out).

The same work list (one LIBERO task, init states 0..E-1, ar K=8, lockstep) is run by
`oat-ros-eval-run` three times in this one invocation, each into a fresh output directory and
in a fresh process: --backend local (one graph at a time), --backend ray --workers 1 and
--backend ray --workers 2 (a local Ray cluster on 127.0.0.1). Reported per configuration: the
whole command's wall time, the Ray cluster start, the time to run the episodes, episodes per
minute with and without the cluster start, and the mean per-episode job time measured where the
graph ran. The Ray overhead per episode is (ray 1 worker - local) / E, i.e. what Ray adds to a
sequential run (task dispatch, worker processes), with and without the cluster start. The
per-episode outcomes of the three runs (from the bags) are compared as well. Note: Ray runs a
task with OMP_NUM_THREADS = its CPUs (1 by default), so the policy node there uses one torch
thread; the local backend leaves the thread count alone.

    python bench/bench_ray.py                        # tiny policy, 6 episodes of 20 steps
    python bench/bench_ray.py --episodes 8 --max-steps 100 --policy PATH --out result.json

One episode job = start the graph (recorder, policy node, LIBERO sim bridge), run one episode,
stop: with the tiny policy and 20 steps the graph start dominates; longer episodes amortize it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(out: Path, common: list[str], backend: list[str], env: dict) -> dict:
    cmd = [sys.executable, "-m", "oat_ros.eval.runner", *common, *backend, "--out", str(out), "--no-reports"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_ray: {' '.join(backend) or 'local'} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    last = json.loads((out / "last_run.json").read_text())
    outcomes = {}
    for f in sorted((out / "runs").glob("*/*/complete.json")):
        o = json.loads(f.read_text())
        outcomes[o["job"]] = o
    n = last["completed"]
    per_ep = list(last["episode_wall_s"].values())
    return {"command_wall_s": round(wall, 2), "cluster_start_s": last["setup_s"], "run_s": last["run_s"],
            "workers": last["workers"], "episodes": n, "retries": last["retries"],
            "episodes_per_min": round(n / (last["run_s"] / 60.0), 3),
            "episodes_per_min_incl_start": round(n / (wall / 60.0), 3),
            "mean_episode_job_s": round(sum(per_ep) / len(per_ep), 2) if per_ep else None,
            "_outcomes": outcomes}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=6, help="episodes per configuration (default 6)")
    p.add_argument("--max-steps", type=int, default=20, help="steps per episode (default 20)")
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--policy", help="policy path (default: the tiny test policy, built in a temp dir)")
    p.add_argument("--ray-num-cpus", type=int, default=2, help="CPUs of the local Ray cluster (default 2)")
    p.add_argument("--ros-domains", default="90-97", help="ROS_DOMAIN_IDs the graphs take (default 90-97)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--keep", type=Path, help="keep the three evaluation directories here")
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    base = args.keep or tmp
    try:
        policy = args.policy
        if not policy:
            sys.path.insert(0, str(ROOT / "test" / "node_scripts"))
            from tiny_policy import make_tiny_policy
            policy = str(make_tiny_policy(tmp / "policy"))
        env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        env.pop("ROS_LOCALHOST_ONLY", None)
        common = ["--suite", args.suite, "--tasks", "0", "--init-states", f"0-{args.episodes - 1}",
                  "--setting", "ar:K=8", "--max-steps", str(args.max_steps), "--policy", policy,
                  "--ros-domains", args.ros_domains]
        configs = {"local": ["--backend", "local"],
                   "ray_1_worker": ["--backend", "ray", "--workers", "1", "--ray-num-cpus", str(args.ray_num_cpus)],
                   "ray_2_workers": ["--backend", "ray", "--workers", "2", "--ray-num-cpus", str(args.ray_num_cpus)]}
        load_before = os.getloadavg()
        results = {}
        for name, backend in configs.items():
            out = base / name
            if out.exists():
                shutil.rmtree(out)
            results[name] = _run(out, common, backend, env)
            print(f"[bench_ray] {name}: {results[name]['episodes_per_min']} episodes/min "
                  f"({results[name]['run_s']} s for {results[name]['episodes']} episodes, "
                  f"+{results[name]['cluster_start_s']} s cluster start)", file=sys.stderr, flush=True)
        outcomes = [r.pop("_outcomes") for r in results.values()]
        loc, r1, r2 = results["local"], results["ray_1_worker"], results["ray_2_workers"]
        e = args.episodes
        summary = {
            "benchmark": "oat-ros-eval-run throughput: local vs ray (1 and 2 workers), same run",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "work": {"suite": args.suite, "episodes": e, "max_steps": args.max_steps,
                     "policy": "tiny test policy" if not args.policy else args.policy,
                     "setting": "ar:K=8, lockstep, greedy"},
            "results": results,
            "ray_overhead_per_episode_s": round((r1["run_s"] - loc["run_s"]) / e, 2),
            "ray_overhead_per_episode_incl_start_s": round((r1["command_wall_s"] - loc["command_wall_s"]) / e, 2),
            # what the driver adds per episode around the job itself (sequential runs only)
            "dispatch_overhead_per_episode_s": {
                k: round(results[k]["run_s"] / e - results[k]["mean_episode_job_s"], 2)
                for k in ("local", "ray_1_worker")},
            "speedup_2_workers_vs_1": round(r2["episodes_per_min"] / r1["episodes_per_min"], 2),
            "speedup_2_workers_vs_local": round(r2["episodes_per_min"] / loc["episodes_per_min"], 2),
            "outcomes_equal": outcomes[0] == outcomes[1] == outcomes[2],
        }
        text = json.dumps(summary, indent=1)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
        return 0 if summary["outcomes_equal"] else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
