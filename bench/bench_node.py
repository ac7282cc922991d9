"""Overhead of policy_node itself: images in -> chunk out, minus the engine's own time.

Starts `python -m oat_ros.ros.policy_node` (own ROS_DOMAIN_ID, namespace and topic prefix,
discovery on loopback) with a tiny random policy (default) or --policy PATH, then plays the
robot in this process, closed loop: publish 2 camera images (128x128 rgb8) + JointState +
PoseStamped with one stamp, then a request for that stamp, wait for the chunk, repeat.

Per chunk:
  e2e_ms      = publish of the images+request -> chunk received here (both in this process)
  engine_ms   = ActionChunk.latency_ms (the engine's predict call, measured by the node)
  overhead_ms = e2e_ms - engine_ms: DDS both ways, image conversion + resize, observation
                assembly, worker hand-off, message building and publishing
The node's own view comes from its diagnostics: node_overhead_p50_ms / _p99_ms (from the
moment a request and its observation are both there to the publish call, minus engine).

    python bench/bench_node.py [--policy DIR|CKPT] [--n 100] [--out result.json]

Prints one JSON document (also written to --out).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "test" / "node_scripts")]


def _stats(values) -> dict:
    a = np.asarray(values, float)
    if a.size == 0:
        return {}
    return {"p50": round(float(np.percentile(a, 50)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "mean": round(float(a.mean()), 3),
            "min": round(float(a.min()), 3), "max": round(float(a.max()), 3), "n": int(a.size)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default="", help="policy path (default: a tiny random policy built here)")
    ap.add_argument("--n", type=int, default=100, help="chunks measured (after --warmup)")
    ap.add_argument("--warmup", type=int, default=5, help="chunks before measuring")
    ap.add_argument("--image-size", type=int, default=128, help="camera images published (square, rgb8)")
    ap.add_argument("--domain", type=int, default=0, help="ROS_DOMAIN_ID (default: random 1..101; the topics are prefixed anyway)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one chunk")
    ap.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                    help="extra policy_node parameter (repeatable)")
    ap.add_argument("--out", default="", help="also write the JSON here")
    a = ap.parse_args(argv)

    domain = a.domain or random.randint(1, 101)
    os.environ.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    prefix = f"/bench{os.getpid()}"

    import rclpy

    from fake_robot import FakeRobot, node_args, picture, stamp_ns

    tmp = tempfile.TemporaryDirectory(prefix="bench_node_")
    policy = a.policy
    if not policy:
        from tiny_policy import make_tiny_policy
        policy = str(make_tiny_policy(Path(tmp.name) / "tiny"))
    args = node_args(prefix, policy_path=policy)
    for extra in a.param:
        args += ["-p", extra]
    log_path = Path(tmp.name) / "node.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    log = open(log_path, "wb")
    node = subprocess.Popen([sys.executable, *args], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    rclpy.init()
    robot = FakeRobot(prefix=prefix, name="bench_robot")
    robot.default_pictures = [picture(a.image_size, a.image_size, seed=1),
                              picture(a.image_size, a.image_size, seed=2)]
    result = {"policy": policy, "n_requested": a.n, "image_size": a.image_size, "domain": domain}
    try:
        t0 = time.monotonic()
        if not (robot.wait_for_services(120) and robot.wait_state("active", 300)
                and robot.wait_for_subscribers(60) and robot.warm_up(120) is not None):
            raise RuntimeError("the node did not come up")
        result["startup_s"] = round(time.monotonic() - t0, 2)
        for _ in range(a.warmup):
            robot.chunk_for(timeout=a.timeout)
        e2e, engine, overhead, lost, chunks = [], [], [], 0, []
        for _ in range(a.n):
            t = robot.now_ns()
            start = robot.chunk_count()
            t_pub = time.perf_counter()
            robot.publish_observation(t)
            robot.request(t)
            c = robot.wait_chunk(lambda c: stamp_ns(c) == t, a.timeout, since=start)
            if c is None:
                lost += 1
                continue
            t_recv = next(tr for tr, m in robot.chunks[start:] if m is c)
            ms = (t_recv - t_pub) * 1e3
            e2e.append(ms)
            engine.append(c.latency_ms)
            overhead.append(ms - c.latency_ms)
            chunks.append(c)
        diag = robot.latest_diagnostics(timeout=5.0, after=len(robot.diagnostics)) or {}
        result.update(
            n=len(e2e), lost=lost,
            e2e_ms=_stats(e2e), engine_ms=_stats(engine), overhead_ms=_stats(overhead),
            encode_ms=_stats([c.encode_ms for c in chunks]), decode_ms=_stats([c.decode_ms for c in chunks]),
            tokens_generated=_stats([c.tokens_generated for c in chunks]),
            node_diagnostics={k: diag.get(k) for k in ("chunks", "node_overhead_p50_ms", "node_overhead_p99_ms",
                                                       "latency_p50_ms", "latency_p99_ms", "superseded",
                                                       "dropped_incomplete", "errors")},
            note="overhead_ms = e2e_ms - engine_ms per chunk (transport both ways included); "
                 "node_diagnostics.node_overhead_* = the node's own view (ready -> publish - engine), "
                 "over its last <= 500 chunks incl. warm-up")
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        robot.close()
        rclpy.try_shutdown()
        node.terminate()
        try:
            node.wait(15)
        except subprocess.TimeoutExpired:
            node.kill()
        log.close()
        if "error" in result:
            result["node_log_tail"] = log_path.read_text(errors="replace")[-3000:]
        tmp.cleanup()
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
