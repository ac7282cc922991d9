"""Sim bridge overhead: the bridge's control step (env.step + building and publishing
/clock, /joint_states, /eef_pose, ~/applied_action and, when rendered, the camera images)
against the bare LIBERO `env.step`, in the same process, same env, interleaved blocks.

    python bench/bench_bridge.py [--steps 60] [--render-steps 12] [--no-subscriber] [--out f.json]

A subscriber process (all bridge topics) runs unless --no-subscriber, so messages are really
serialized and delivered. Prints (and writes with --out) JSON; times in milliseconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(150 + random.randrange(50)))

SUBSCRIBER = r"""
import rclpy, sys
from sensor_msgs.msg import Image, JointState
from geometry_msgs.msg import PoseStamped
from rosgraph_msgs.msg import Clock
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.executors import ExternalShutdownException
rclpy.init()
n = rclpy.create_node("bench_sub")
q = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
count = [0]
cb = lambda m: count.__setitem__(0, count[0] + 1)
for t, ty in [("/camera/agentview/image_raw", Image), ("/camera/eye_in_hand/image_raw", Image),
              ("/joint_states", JointState), ("/eef_pose", PoseStamped), ("/clock", Clock),
              ("/sim_bridge/applied_action", JointState)]:
    n.create_subscription(ty, t, cb, q)
try:
    rclpy.spin(n)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
print(count[0], flush=True)
"""


def stats(samples_s):
    ms = sorted(x * 1000 for x in samples_s)
    return {"n": len(ms), "median": round(statistics.median(ms), 3),
            "mean": round(statistics.fmean(ms), 3),
            "p90": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 3),
            "min": round(ms[0], 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="libero_object")
    ap.add_argument("--task", type=int, default=0)
    ap.add_argument("--steps", type=int, default=60, help="steps per variant without rendering")
    ap.add_argument("--render-steps", type=int, default=12, help="steps per variant, 2 cameras")
    ap.add_argument("--block", type=int, default=6, help="interleaving block size")
    ap.add_argument("--no-subscriber", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import numpy as np
    import rclpy
    from rclpy.parameter import Parameter

    from sim_bridge.bridge_node import SimBridge
    from sim_bridge.libero_env import LiberoEnv

    sub = None
    if not args.no_subscriber:
        sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    t0 = time.perf_counter()
    env = LiberoEnv(cameras=("agentview", "robot0_eye_in_hand"))
    env.load(args.suite, args.task)
    env.reset(0)
    setup_s = time.perf_counter() - t0
    rclpy.init()
    node = SimBridge(env=env, parameter_overrides=[Parameter("suite", value=args.suite)])
    if sub is not None:
        deadline = time.monotonic() + 30
        while node.joint_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    action = np.array([0.05, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
    for _ in range(3):                                   # warm-up (typesupport, first render)
        node.step_once(action, True, {"src": "warmup"})
        node.step_once(action, False, {"src": "warmup"})
        env.step(action, render=False)

    def measure(render: bool, total: int):
        bare, bridge, publish = [], [], []
        while len(bare) < total:
            for _ in range(args.block):
                t = time.perf_counter()
                env.step(action, render=render)
                bare.append(time.perf_counter() - t)
            for _ in range(args.block):
                t = time.perf_counter()
                obs, _ = node.step_once(action, render, {"src": "bench"})
                bridge.append(time.perf_counter() - t)
                t = time.perf_counter()                   # publishing alone, same messages
                node._publish_applied(action, node._sim_ns, {"src": "bench"})
                node._publish_observation(obs, node._sim_ns)
                publish.append(time.perf_counter() - t)
            env.reset(0)                                  # stay near the initial state
        b, g = stats(bare), stats(bridge)
        return {"env_step_ms": b, "bridge_step_ms": g, "publish_only_ms": stats(publish),
                "overhead_median_ms": round(g["median"] - b["median"], 3),
                "overhead_median_pct": round(100 * (g["median"] / b["median"] - 1), 1)}

    result = {
        "bench": "bench_bridge", "suite": args.suite, "task": args.task,
        "host": {"python": platform.python_version(), "machine": platform.machine(),
                 "cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
        "subscriber": sub is not None, "env_setup_s": round(setup_s, 2),
        "no_render": measure(False, args.steps),
        "render_2_cameras": measure(True, args.render_steps),
    }
    result["host"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    node.destroy_node()
    rclpy.try_shutdown()
    env.close()
    if sub is not None:
        sub.send_signal(2)
        try:
            out, _ = sub.communicate(timeout=10)
            result["subscriber_received"] = int(out.strip() or 0)
        except (subprocess.TimeoutExpired, ValueError):
            sub.kill()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
