"""A scripted stand-in for the policy node, plus a recorder, for the sim bridge tests.

    python test/sim_scripts/scripted_policy.py CONFIG.json OUT.jsonl

Answers every /oat/chunk_request with an ActionChunk stamped with the request stamp (after
`delay_s`), and records every bridge topic as one JSON line per message in OUT.jsonl
(flushed per line). CONFIG keys (all optional):

  horizon (8), n_action_steps (4), delay_s (0.0), respond (true)
  bad:     {"<episode>:<request>": "nan" | "dim6" | "range" | "short"}   bad chunk instead
  actions: {"<episode>:<request>": [step, ...]} done instead of answering; steps are
           {"service": "force_success" | "reset" | "next_episode"},
           {"set": {name: value, ...}} (results recorded) or {"answer": true} (send the
           normal chunk now), run in order (each after the previous finished).
  exit_after_events: exit after this many END/ABORT episode events (0 = run until SIGINT).

Chunk row i of the answer to request r of an episode: [0.1 + 0.01 i, 0.01 (r % 50), 0, 0, 0,
0, -1] — distinct rows, so the executed rows can be identified from ~/applied_action.
"""
import json
import sys
import time

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from oat_ros_interfaces.msg import ActionChunk, Episode
from rcl_interfaces.srv import SetParameters
from rclpy.executors import ExternalShutdownException
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger

from oat_ros.ros.messages import float32_sequence

cfg = json.loads(open(sys.argv[1]).read())
out = open(sys.argv[2], "a", buffering=1)
H, N = int(cfg.get("horizon", 8)), int(cfg.get("n_action_steps", 4))
DELAY = float(cfg.get("delay_s", 0.0))
EXIT_AFTER = int(cfg.get("exit_after_events", 0))

rclpy.init()
node = rclpy.create_node("scripted_policy")
reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
latched = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
chunk_pub = node.create_publisher(ActionChunk, "/oat/action_chunk", reliable)
clients = {name: node.create_client(Trigger, f"/sim_bridge/{name}")
           for name in ("force_success", "reset", "next_episode")}
param_client = node.create_client(SetParameters, "/sim_bridge/set_parameters")
state = {"episode": -1, "requests": 0, "seq": 0, "events": 0}
pending = []           # (due monotonic time, ActionChunk)


def stamp(h):
    return h.stamp.sec + h.stamp.nanosec * 1e-9


def record(topic, **fields):
    out.write(json.dumps({"topic": topic, "wall": time.monotonic(), **fields}) + "\n")


def make_chunk(header, request, kind):
    rows = np.zeros((H, 7))
    rows[:, 0] = 0.1 + 0.01 * np.arange(H)
    rows[:, 1] = 0.01 * (request % 50)
    rows[:, 6] = -1.0
    dim = 7
    if kind == "nan":
        rows[1, 2] = np.nan
    elif kind == "range":
        rows[0, 0] = 3.0
    elif kind == "dim6":
        rows, dim = rows[:, :6], 6
    flat = rows.reshape(-1)
    if kind == "short":
        flat = flat[:-3]
    msg = ActionChunk()
    msg.header.stamp = header.stamp
    msg.header.frame_id = "world"
    msg.seq = state["seq"]
    msg.policy_id = "scripted"
    msg.horizon, msg.action_dim, msg.n_action_steps = H, dim, N
    msg.control_period_s = 0.05
    msg.actions = float32_sequence(flat)
    state["seq"] += 1
    record("sent_chunk", seq=msg.seq, stamp=stamp(header), kind=kind or "good",
           actions=rows.tolist(), episode=state["episode"], request=request)
    return msg


def run_steps(steps):
    if not steps:
        return
    step, rest = steps[0], steps[1:]
    if "answer" in step:
        header, request = state["last_request"]
        pending.append((time.monotonic() + DELAY, make_chunk(header, request, None)))
        run_steps(rest)
    elif "service" in step:
        client = clients[step["service"]]
        client.wait_for_service(timeout_sec=10)
        future = client.call_async(Trigger.Request())

        def done(f, name=step["service"]):
            r = f.result()
            record("service_result", service=name, success=r.success, message=r.message)
            run_steps(rest)
        future.add_done_callback(done)
    elif "set" in step:
        param_client.wait_for_service(timeout_sec=10)
        request = SetParameters.Request()
        request.parameters = [Parameter(k, value=v).to_parameter_msg()
                              for k, v in step["set"].items()]
        future = param_client.call_async(request)

        def done_set(f, names=list(step["set"])):
            results = f.result().results
            record("set_result", names=names, successful=[r.successful for r in results],
                   reasons=[r.reason for r in results])
            run_steps(rest)
        future.add_done_callback(done_set)


def on_request(header):
    request = state["requests"]
    state["requests"] += 1
    key = f"{state['episode']}:{request}"
    record("request", stamp=stamp(header), frame_id=header.frame_id, episode=state["episode"],
           request=request)
    state["last_request"] = (header, request)
    if key in cfg.get("actions", {}):
        run_steps(cfg["actions"][key])
        return
    if not cfg.get("respond", True):
        return
    pending.append((time.monotonic() + DELAY, make_chunk(header, request,
                                                         cfg.get("bad", {}).get(key))))


def on_episode(msg):
    if msg.event == Episode.START:
        state["episode"], state["requests"] = msg.episode_index, 0
    record("episode", event=int(msg.event), stamp=stamp(msg.header),
           episode_index=msg.episode_index, suite=msg.suite, task_index=msg.task_index,
           task_uid=msg.task_uid, task_name=msg.task_name, init_state_index=msg.init_state_index,
           seed=msg.seed, step=msg.step, max_steps=msg.max_steps,
           chunks_executed=msg.chunks_executed, success=msg.success, reason=msg.reason,
           run_id=msg.run_id, language=msg.language_instruction)
    if msg.event != Episode.START:
        state["events"] += 1


def on_image(msg):
    img = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
    record("image", stamp=stamp(msg.header), frame_id=msg.header.frame_id, height=msg.height,
           width=msg.width, encoding=msg.encoding, mean=float(img.mean()),
           top_mean=float(img[: msg.height // 4].mean()),
           bottom_mean=float(img[-msg.height // 4:].mean()))


node.create_subscription(Header, "/oat/chunk_request", on_request, reliable)
node.create_subscription(Episode, "/oat/episode", on_episode, latched)
for cam in ("agentview", "eye_in_hand"):
    node.create_subscription(Image, f"/camera/{cam}/image_raw", on_image, reliable)
node.create_subscription(JointState, "/joint_states", lambda m: record(
    "joint_states", stamp=stamp(m.header), name=list(m.name), position=list(m.position),
    velocity=list(m.velocity)), reliable)
node.create_subscription(PoseStamped, "/eef_pose", lambda m: record(
    "eef_pose", stamp=stamp(m.header), frame_id=m.header.frame_id,
    position=[m.pose.position.x, m.pose.position.y, m.pose.position.z],
    quat=[m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z,
          m.pose.orientation.w]), reliable)
node.create_subscription(Clock, "/clock", lambda m: record(
    "clock", stamp=m.clock.sec + m.clock.nanosec * 1e-9), reliable)
node.create_subscription(JointState, "/sim_bridge/applied_action", lambda m: record(
    "applied", stamp=stamp(m.header), action=list(m.position),
    info=json.loads(m.header.frame_id)), reliable)
node.create_subscription(String, "/sim_bridge/rejected_chunks", lambda m: record(
    "rejected", **json.loads(m.data)), reliable)

try:
    while rclpy.ok():
        timeout = 0.1
        if pending:
            timeout = max(0.0, min(timeout, pending[0][0] - time.monotonic()))
        rclpy.spin_once(node, timeout_sec=timeout)
        now = time.monotonic()
        while pending and pending[0][0] <= now and chunk_pub.get_subscription_count():
            chunk_pub.publish(pending.pop(0)[1])
        if EXIT_AFTER and state["events"] >= EXIT_AFTER:
            break
except (KeyboardInterrupt, ExternalShutdownException):
    pass
finally:
    record("exit")
    out.close()
    node.destroy_node()
    rclpy.try_shutdown()
