"""oat-ros-eval-run: evaluate a policy in the sim graph, one episode per job, locally or on Ray.

The work list (decode settings x tasks x init states x seeds) is cut into episode jobs. Each job
starts a whole, isolated graph (recorder + policy node + sim bridge: `oat-ros-bringup sim
--main-job`) for exactly one episode and leaves its bag in
OUT/runs/<setting>/<suite>-t<task>-i<init>-s<seed>/bag. A job whose bag is finalized and holds
the episode's END is complete and skipped when the command is run again, so an interrupted
evaluation resumes where it stopped; anything else in a job directory is removed and redone.
A job that fails (the graph crashed, the worker running it died or was killed, a timeout) is
retried up to --max-retries times, then reported as failed with its error. At the end, one
report per setting and a paired comparison of the first setting against each other one are
written from the bags alone (OUT/reports/), plus OUT/reports/jobs.json (every job: status,
attempts, error, the episode's outcome).

Backends: `local` runs one graph at a time in this process's machine; `ray` runs one graph per
Ray worker (a local cluster on 127.0.0.1, or --ray-address to join one), each on its own
ROS_DOMAIN_ID. `--shard i/N` runs every N-th job only (a Slurm array without Ray); run once more
with --report-only after all shards to merge them.

    oat-ros-eval-run --suite libero_object --tasks 0-9 --init-states 0-4 \\
        --setting ar:K=8 --setting ar:K=4 --setting blockwise:P=4:r=1 --out runs/eval
    oat-ros-eval-run ... --backend ray --workers 2
    oat-ros-eval-run ... --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT   # then --report-only
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from tqdm import tqdm

from oat_ros.eval.worklist import (COMPLETE_NAME, JOB_NAME, SETTING_KEYS, WORKER_NAME,  # noqa: F401
                                   DecodeSetting, EpisodeJob, is_complete, job_dir, job_status,
                                   mark_complete, parse_range, parse_shard, read_json, shard,
                                   work_list, write_json)

MARKER_ENV = "OAT_EVAL_JOB"      # every process of a job's graph carries it (found again via /proc)
PARENT_ENV = "OAT_EVAL_PARENT"
DEFAULT_DOMAINS = "64-101"       # ROS_DOMAIN_IDs the graphs of one machine take (one per running graph)
LAST_RUN_NAME = "last_run.json"

# Runs the bringup so that it gets SIGTERM (and stops its graph cleanly) when the process that
# started it dies, e.g. a Ray worker killed by the OOM monitor: no orphaned graph keeps writing.
# A Ray worker ignores (and may block) SIGINT/SIGTERM, and both would be inherited by every node,
# which then could not be stopped cleanly: restore the defaults first.
_GUARD = ("import ctypes, os, runpy, signal, sys\n"
          "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})\n"
          "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
          "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
          "signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"
          "try:\n    ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))\nexcept Exception:\n    pass\n"
          f"if os.environ.get('{PARENT_ENV}', str(os.getppid())) != str(os.getppid()):\n    sys.exit(75)\n"
          "runpy.run_module('oat_ros.ros.bringup', run_name='__main__', alter_sys=True)\n")


# --------------------------------------------------------------------------------------------
# One job: the graph of one episode
# --------------------------------------------------------------------------------------------

def bringup_command(out: Path, job: EpisodeJob, policy: str | None, extra: list[str]) -> list[str]:
    sets = [f"sim_bridge.suite={job.suite}", f"sim_bridge.task_indices=[{job.task_index}]",
            f"sim_bridge.init_states=[{job.init_state}]", "sim_bridge.num_episodes=1",
            f"sim_bridge.seed={job.seed}", f"sim_bridge.max_steps={job.max_steps}",
            "sim_bridge.exit_when_done=true", f"sim_bridge.run_id={job.run_id}"]
    sets += [f"policy_node.{k}={v}" for k, v in job.setting.params]
    if policy:
        sets.append(f"policy_node.policy_path={policy}")
    cmd = [sys.executable, "-m", "oat_ros.ros.bringup", "sim", "--main-job", "--run-dir", str(job_dir(out, job))]
    for s in sets + list(extra):
        cmd += ["--set", s]
    return cmd


def job_marker(d: Path) -> str:
    return hashlib.sha1(str(Path(d).resolve()).encode()).hexdigest()[:20]


def marked_pids(marker: str) -> list[int]:
    """Processes on this machine that belong to a graph of the job with this marker (Linux /proc)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for name in entries:
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(name))
        except OSError:
            continue
    return pids


def stop_marked(marker: str, timeout: float = 20.0) -> int:
    """SIGINT (bags get finalized), then SIGKILL, every process left by an attempt of this job."""
    pids = marked_pids(marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        time.sleep(0.2)
        pids = marked_pids(marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def failure_reason(log: Path, rc: int | None) -> str:
    """The bringup's own account of what went wrong: the node that exited first and its last
    lines, the nodes that did not exit cleanly, and what the bag holds."""
    try:
        lines = [ln.rstrip() for ln in log.read_text(errors="replace").splitlines()]
    except OSError:
        lines = []
    end = next((i for i, ln in enumerate(lines) if ln.startswith("=== oat_ros main job summary")), len(lines))
    start = next((i for i, ln in enumerate(lines[:end]) if "exited with code" in ln or "--timeout" in ln), None)
    picked = lines[start:end] if start is not None else []
    summary = lines[end:]
    picked += [ln for ln in summary if ln.strip().startswith("node ") and not ln.rstrip().endswith(" 0")]
    picked += [ln for ln in summary if ln.strip().startswith("episodes:")]
    if not picked:
        picked = lines[-5:]
    text = " | ".join(" ".join(ln.split()) for ln in picked if ln.strip())
    if len(text) > 600:
        text = text[:300] + " ... " + text[-300:]
    return f"exit code {rc}, episode not complete: {text or 'no output'} (log: {log})"


def execute(out: Path, job: EpisodeJob, policy: str | None, extra: list[str], timeout: float,
            env: dict | None = None, lock_fd: int | None = None, info: dict | None = None) -> tuple[bool, str]:
    """Run one episode's graph to completion. Whatever an earlier attempt of this job left (its
    processes on this machine, its directory) is removed first. True if the bag is complete."""
    d = job_dir(out, job)
    marker = job_marker(d)
    stop_marked(marker)
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    if info:
        write_json(d / WORKER_NAME, info)
    env = dict(os.environ if env is None else env)
    env[MARKER_ENV] = marker
    env[PARENT_ENV] = str(os.getpid())
    cmd = bringup_command(out, job, policy, extra)
    cmd = [cmd[0], "-c", _GUARD] + cmd[3:]          # python -m oat_ros.ros.bringup ARGS, guarded
    log_path = d / "bringup.log"
    rc = None
    with open(log_path, "wb") as log:
        # Own session: a Ray raylet kills a dead worker's process group, which would SIGKILL the
        # bringup and orphan its nodes; instead the bringup gets SIGTERM (parent-death signal,
        # see _GUARD) and stops its graph while still holding the ROS_DOMAIN_ID lock.
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=(lock_fd,) if lock_fd is not None else ())
        try:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)       # the bringup stops its graph
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                return False, f"timed out after {timeout:.0f} s (log: {log_path})"
        finally:
            if proc.poll() is None:                    # interrupted (KeyboardInterrupt)
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            stop_marked(marker)
    if mark_complete(out, job) is None:
        return False, failure_reason(log_path, rc)
    return True, ""


class DomainPool:
    """ROS_DOMAIN_IDs for the graphs running at once on one machine: a graph takes the first id
    of the pool whose lock file (flock, in the machine's temp dir) it can hold. The lock is also
    held by the bringup, so an id is free again only when its graph has stopped, and a crashed
    holder frees it automatically. Every evaluation on the machine shares the lock files."""

    def __init__(self, ids, lock_dir: Path | None = None):
        self.ids = list(ids)
        self.lock_dir = Path(lock_dir or Path(tempfile.gettempdir()) / "oat_ros_domains")

    def acquire(self, timeout: float = 3600.0):
        """(domain id, open lock file); close the file to release."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            for domain in self.ids:
                f = open(self.lock_dir / f"domain-{domain}.lock", "a+")
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    f.close()
                    continue
                f.seek(0)
                f.truncate()
                f.write(f"{os.getpid()}\n")
                f.flush()
                return domain, f
            if time.monotonic() > deadline:
                raise RuntimeError(f"no free ROS_DOMAIN_ID in {self.ids} after {timeout:.0f} s "
                                   "(more graphs on this machine than ids: widen --ros-domains)")
            time.sleep(0.5)


def run_episode_job(out: str, job: EpisodeJob, policy: str | None, extra: list[str], timeout: float,
                    domains: list[int] | None, attempt: int, backend: str) -> dict:
    """Worker side (the same for every backend): take a ROS_DOMAIN_ID, run the episode's graph on
    loopback-only DDS, return what happened (never raises for a failed episode)."""
    t0 = time.time()
    env = dict(os.environ)
    lock = None
    try:
        if domains:
            domain, lock = DomainPool(domains).acquire()
            env["ROS_DOMAIN_ID"] = str(domain)
        else:
            domain = int(env.get("ROS_DOMAIN_ID", "0") or 0)
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"   # network rule: DDS stays on loopback
        env.pop("ROS_LOCALHOST_ONLY", None)
        env.setdefault("PYTHONUNBUFFERED", "1")
        info = {"job": job.name, "attempt": attempt, "backend": backend, "host": socket.gethostname(),
                "pid": os.getpid(), "ros_domain_id": domain, "started": t0}
        ok, why = execute(Path(out), job, policy, extra, timeout, env=env,
                          lock_fd=lock.fileno() if lock else None, info=info)
    except Exception as err:  # noqa: BLE001 - reported as the job's error
        ok, why, info = False, f"{type(err).__name__}: {err}", {"host": socket.gethostname(), "pid": os.getpid()}
    finally:
        if lock is not None:
            lock.close()
    outcome = read_json(job_dir(Path(out), job) / COMPLETE_NAME) if ok else None
    return {"ok": ok, "error": why, "host": info.get("host"), "pid": info.get("pid"),
            "ros_domain_id": info.get("ros_domain_id"), "wall_s": time.time() - t0, "outcome": outcome}


# --------------------------------------------------------------------------------------------
# Backends and the driver
# --------------------------------------------------------------------------------------------

class LocalBackend:
    """One graph at a time, in a child process of the driver."""
    name = "local"

    def __init__(self, out: Path, policy, extra, timeout, domains=None):
        self.args = (str(out), policy, list(extra), timeout, domains)
        self.queue: deque = deque()
        self.capacity = 1
        self.setup_s = 0.0

    @property
    def running(self) -> int:
        return len(self.queue)

    def submit(self, job: EpisodeJob, attempt: int):
        self.queue.append((job, attempt))

    def wait(self) -> list:
        if not self.queue:
            return []
        job, attempt = self.queue.popleft()
        out, policy, extra, timeout, domains = self.args
        return [(job, run_episode_job(out, job, policy, extra, timeout, domains, attempt, self.name))]

    def describe(self) -> str:
        d = self.args[4]
        ids = "" if not d else f", ROS_DOMAIN_ID {d[0]}" if len(d) == 1 else f", ROS_DOMAIN_IDs {min(d)}-{max(d)}"
        return "local backend: 1 graph at a time" + ids

    def close(self, cancel: bool = False):
        self.queue.clear()


def run_jobs(backend, jobs: list[EpisodeJob], out: Path, max_retries: int) -> dict:
    """Run every job (retrying failures up to max_retries times); returns per-job results."""
    queue = deque(jobs)
    attempts: dict[str, int] = {}
    errors: dict[str, list] = {}
    results: dict[str, dict] = {}
    counts = {"done": 0, "failed": 0, "retries": 0}
    bar = tqdm(total=len(jobs), desc="episodes", unit="ep", dynamic_ncols=True)

    def postfix():
        bar.set_postfix_str(f"done {counts['done']} failed {counts['failed']} running {backend.running} "
                            f"retries {counts['retries']}")

    try:
        while queue or backend.running:
            while queue and backend.running < backend.capacity:
                job = queue.popleft()
                attempts[job.name] = attempts.get(job.name, 0) + 1
                backend.submit(job, attempts[job.name])
            postfix()
            for job, res in backend.wait():
                n = attempts[job.name]
                record = {"job": job.name, "backend": backend.name, "attempts": n, "host": res.get("host"),
                          "pid": res.get("pid"), "ros_domain_id": res.get("ros_domain_id"),
                          "wall_s": round(res.get("wall_s") or 0.0, 2)}
                if res["ok"]:
                    counts["done"] += 1
                    record.update(status="complete", error="", errors=errors.get(job.name, []))
                    results[job.name] = record
                    bar.update(1)
                    tqdm.write(f"[eval-run] {job.name}: done in {res.get('wall_s', 0):.0f} s"
                               + (f" (attempt {n})" if n > 1 else ""))
                else:
                    errors.setdefault(job.name, []).append(res["error"])
                    if n <= max_retries:
                        counts["retries"] += 1
                        record.update(status="retrying", error=res["error"], errors=errors[job.name])
                        tqdm.write(f"[eval-run] {job.name}: attempt {n} failed, retrying: {res['error']}")
                        queue.append(job)
                    else:
                        counts["failed"] += 1
                        record.update(status="failed", error=res["error"], errors=errors[job.name])
                        results[job.name] = record
                        bar.update(1)
                        tqdm.write(f"[eval-run] {job.name}: FAILED after {n} attempts: {res['error']}")
                d = job_dir(out, job)
                d.mkdir(parents=True, exist_ok=True)
                write_json(d / JOB_NAME, record)
                postfix()
    finally:
        bar.close()
    return {"results": results, "retries": counts["retries"]}


def write_reports(out: Path, settings: list[DecodeSetting], jobs: list[EpisodeJob]) -> list[dict]:
    """Reports from the bags of the complete jobs of the work list (each job, hence each episode,
    once), and OUT/reports/jobs.json with every job's status. Returns the statuses."""
    from oat_ros.eval import cli
    reports = out / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    statuses = [job_status(out, j) for j in jobs]
    complete = {s["job"] for s in statuses if s["status"] == "complete"}
    counts = {k: sum(s["status"] == k for s in statuses) for k in ("complete", "failed", "missing")}
    write_json(reports / "jobs.json", {"counts": counts, "jobs": statuses})
    bags = {s.label: [job_dir(out, j) / "bag" for j in jobs if j.setting == s and j.name in complete]
            for s in settings}
    for label, paths in bags.items():
        if paths:
            _report(cli, ["report", *map(str, paths), "--out", str(reports / label),
                          "--title", f"OAT evaluation: {label}"])
    first = settings[0].label
    for other in settings[1:]:
        if bags[first] and bags[other.label]:
            _report(cli, ["compare", "--a", *map(str, bags[first]), "--b", *map(str, bags[other.label]),
                          "--label-a", first, "--label-b", other.label,
                          "--out", str(reports / f"{first}_vs_{other.label}")])
    return statuses


def _report(cli, argv: list[str]):
    """A report with plots, or without them if plotting fails (the numbers never depend on it)."""
    try:
        cli.main(argv)
    except Exception as err:  # noqa: BLE001
        print(f"[eval-run] plots failed ({type(err).__name__}: {err}); writing the report without plots")
        cli.main(argv + ["--no-plots"])


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oat-ros-eval-run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--tasks", default="0", help="task indices, e.g. 0-9 or 0,3,5 (default 0)")
    p.add_argument("--init-states", default="0-4",
                   help="init-state indices per task (default 0-4; -1 = seeded reset with each --seeds value)")
    p.add_argument("--seeds", default="0", help="sim_bridge.seed values, one episode each (default 0)")
    p.add_argument("--setting", action="append", default=[], metavar="MODE[:KEY=VALUE...]",
                   help="decode setting, repeatable: ar:K=8, ar:K=4, blockwise:P=4:r=1, ar:K=8:deadline=40 "
                        f"(keys: {', '.join(SETTING_KEYS)}); default ar:K=8")
    p.add_argument("--max-steps", type=int, default=0, help="per episode; 0 = the suite's default")
    p.add_argument("--policy", help="policy_node.policy_path (default: the embedded default policy)")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="any other parameter for every episode (passed to oat-ros-bringup)")
    p.add_argument("--out", type=Path, required=True,
                   help="output directory (runs/ and reports/); with Ray on several machines, a path "
                        "every node sees (NFS or similar)")
    p.add_argument("--timeout", type=float, default=3600.0, help="per episode, seconds")
    p.add_argument("--limit", type=int, default=0, help="run at most this many pending episodes, then stop")
    p.add_argument("--max-retries", type=int, default=2,
                   help="retries of a failed episode (graph crash, worker killed, timeout) before it is "
                        "reported as failed (default 2)")
    p.add_argument("--shard", default=None, metavar="i/N",
                   help="run only shard i of N (every N-th episode of the work list, from i; 0 <= i < N), "
                        "e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; writes no reports")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the reports (all shards merged) and jobs.json from OUT")
    p.add_argument("--no-reports", action="store_true", help="skip the reports at the end")
    g = p.add_argument_group("backend")
    g.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: one graph at a time here; ray: one graph per Ray worker (default local)")
    g.add_argument("--workers", type=int, default=0,
                   help="ray: graphs running at once (default: as many as the cluster's resources fit)")
    g.add_argument("--ray-address", default=None,
                   help="ray: join this cluster (e.g. HEAD:6379 or 'auto'); default: start a local one on 127.0.0.1")
    g.add_argument("--ray-num-cpus", type=int, default=None,
                   help="ray, local cluster: CPUs it may use (default: all of this machine's)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, help="ray: CPUs one graph needs (default 1)")
    g.add_argument("--memory-per-worker-gb", type=float, default=2.0,
                   help="ray: memory one graph needs (default 2.0: a LIBERO env ~1.5 GB + policy + recorder)")
    g.add_argument("--gpus-per-worker", default="auto",
                   help="ray: GPU fraction for the policy (default auto: 0.25 if the cluster has GPUs, "
                        "then also policy_node.device=cuda unless --set; else 0)")
    g.add_argument("--ros-domains", default=None, metavar="RANGE",
                   help="ROS_DOMAIN_IDs the graphs on one machine take, one per running graph, locked "
                        f"so that no two graphs share one (default {DEFAULT_DOMAINS}; local backend: the "
                        "inherited ROS_DOMAIN_ID if set)")
    return p


def _print_summary(statuses: list[dict]):
    counts = {k: sum(s["status"] == k for s in statuses) for k in ("complete", "failed", "missing")}
    print(f"[eval-run] {len(statuses)} episodes: {counts['complete']} complete, {counts['failed']} failed, "
          f"{counts['missing']} not run")
    for s in statuses:
        if s["status"] == "failed":
            print(f"[eval-run] failed: {s['job']} (after {s['attempts']} attempts): {s['error']}")


def _interrupt(*_):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = [DecodeSetting.parse(s) for s in (args.setting or ["ar:K=8"])]
        jobs = work_list(settings, args.suite, parse_range(args.tasks), parse_range(args.init_states),
                         args.max_steps, parse_range(args.seeds))
        shard_index = parse_shard(args.shard) if args.shard else None
        domains = parse_range(args.ros_domains) if args.ros_domains else None
    except ValueError as e:
        raise SystemExit(f"oat-ros-eval-run: {e}")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.policy and Path(args.policy).exists():
        args.policy = str(Path(args.policy).resolve())   # workers may run elsewhere (another cwd, node)
    if args.report_only:
        statuses = write_reports(out, settings, jobs)
        print(f"[eval-run] reports in {out / 'reports'}")
        _print_summary(statuses)
        return 0 if all(s["status"] == "complete" for s in statuses) else 1

    mine = shard(jobs, *shard_index) if shard_index else jobs
    done = [j for j in mine if is_complete(out, j)]
    pending = [j for j in mine if j not in done]
    if args.limit:
        pending = pending[:args.limit]
    where = f" in shard {args.shard}" if shard_index else ""
    print(f"[eval-run] {len(mine)} episodes{where} ({len(done)} already complete, {len(pending)} to run)",
          flush=True)

    t0 = time.monotonic()
    extra = list(args.set)
    if args.backend == "ray":
        from oat_ros.eval.ray_backend import RayBackend
        backend = RayBackend(out, args.policy, extra, args.timeout,
                             domains or parse_range(DEFAULT_DOMAINS), address=args.ray_address,
                             num_cpus=args.ray_num_cpus, workers=args.workers,
                             cpus_per_worker=args.cpus_per_worker,
                             memory_per_worker_gb=args.memory_per_worker_gb,
                             gpus_per_worker=args.gpus_per_worker, start=bool(pending))
    else:
        if args.workers > 1:
            raise SystemExit("oat-ros-eval-run: --workers needs --backend ray (local runs one graph at a time)")
        inherited = os.environ.get("ROS_DOMAIN_ID", "").strip()
        if not domains:
            domains = [int(inherited)] if inherited.isdigit() else parse_range(DEFAULT_DOMAINS)
        backend = LocalBackend(out, args.policy, extra, args.timeout, domains)
    print(f"[eval-run] {backend.describe()}", flush=True)

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM,)}
    signal.signal(signal.SIGTERM, _interrupt)      # e.g. Slurm's time limit: stop like Ctrl-C
    t_run = time.monotonic()
    try:
        ran = run_jobs(backend, pending, out, args.max_retries)
    except KeyboardInterrupt:
        backend.close(cancel=True)
        print("\n[eval-run] interrupted: run the same command again to resume (complete episodes are kept)",
              flush=True)
        return 130
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    backend.close()
    run_s = time.monotonic() - t_run
    results = ran["results"]
    write_json(out / LAST_RUN_NAME, {
        "backend": backend.name, "workers": backend.capacity, "shard": args.shard, "episodes": len(mine),
        "already_complete": len(done), "ran": len(pending),
        "completed": sum(r["status"] == "complete" for r in results.values()),
        "failed": sum(r["status"] == "failed" for r in results.values()), "retries": ran["retries"],
        "setup_s": round(backend.setup_s, 2), "run_s": round(run_s, 2),
        "wall_s": round(time.monotonic() - t0, 2),
        "episode_wall_s": {k: r["wall_s"] for k, r in results.items()}})

    failed = [r for r in results.values() if r["status"] == "failed"]
    if shard_index:
        print("[eval-run] shard done; after all shards: the same command without --shard, with --report-only")
    elif not args.no_reports:
        statuses = write_reports(out, settings, jobs)
        print(f"[eval-run] reports in {out / 'reports'}")
        _print_summary(statuses)
        return 1 if failed or any(s["status"] == "failed" for s in statuses) else 0
    for r in failed:
        print(f"[eval-run] failed: {r['job']} (after {r['attempts']} attempts): {r['error']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
