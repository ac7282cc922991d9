"""A scripted policy + a stand-in for the ros2_control controllers, for the executor tests.

    python test/executor_scripts/scripted_chunks.py CONFIG.json OUT.jsonl

Real robot hardware cannot exist here: this process subscribes to the executor's command
topics exactly as a joint_trajectory_controller / servo node / gripper controller would and
records every message, one JSON line each in OUT.jsonl (flushed per line). It also plays the
policy (publishes scripted ActionChunks) and the robot's state publishers (/joint_states,
/eef_pose), and calls the executor's services.

CONFIG keys:
  executor: the executor's node path (e.g. /t12_0/chunk_executor), executor_pid
  topics: {chunk, arm, gripper (or null), joint_states, eef_pose}; output: joint_trajectory |
          twist | pose (the type of the arm topic)
  joint_states: {names, positions, start_at (s; default: from the start, before t = 0)}
                                                               published at 50 Hz
  eef_pose: {position, quat, frame_id}                         published at 50 Hz
  timeline: [{"at": s, ...}] in time order, each one of
      {"chunk": {seq, horizon, n, dim, period, delay_s, rows: [[...]] | flat: [...]}}:
          publish an ActionChunk stamped now - delay_s
      {"enable": bool}                 call <executor>/enable (std_srvs/SetBool)
      {"set": {name: value}}           call <executor>/set_parameters, one request per entry
      {"joint_positions": [...]}       change the published joint positions
      {"diag": {name, level, message}} publish a DiagnosticArray with this one status on
                                       /diagnostics ("{prefix}" in name = the executor's namespace)
      {"sigint": true}                 SIGINT the executor process
      {"end": true}                    stop recording and exit
  t = 0 is when the executor's topics and services are connected both ways.
"""
import json
import math
import os
import signal
import sys
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, TwistStamped
from oat_ros_interfaces.msg import ActionChunk
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from oat_ros.ros.messages import float32_sequence

cfg = json.loads(open(sys.argv[1]).read())
out = open(sys.argv[2], "a", buffering=1)
topics = cfg["topics"]
executor = cfg["executor"]
prefix = executor.rsplit("/", 1)[0]

rclpy.init()
node = rclpy.create_node("scripted_chunks")
reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
chunk_pub = node.create_publisher(ActionChunk, topics["chunk"], QoSProfile(
    depth=10, reliability=ReliabilityPolicy.RELIABLE))
joint_pub = node.create_publisher(JointState, topics["joint_states"], 10)
pose_pub = node.create_publisher(PoseStamped, topics["eef_pose"], 10)
diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
enable_client = node.create_client(SetBool, f"{executor}/enable")
param_client = node.create_client(SetParameters, f"{executor}/set_parameters")
state = {"joint_positions": (cfg.get("joint_states") or {}).get("positions"), "done": False}
t0 = None


def now_s():
    return node.get_clock().now().nanoseconds * 1e-9


def rel():
    return None if t0 is None else time.monotonic() - t0


def record(topic, **fields):
    out.write(json.dumps({"topic": topic, "wall": now_s(), "t": rel(), **fields}) + "\n")


def stamp_of(msg):
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def on_twist(m):
    t = m.twist
    record("arm", stamp=stamp_of(m), frame_id=m.header.frame_id,
           linear=[t.linear.x, t.linear.y, t.linear.z],
           angular=[t.angular.x, t.angular.y, t.angular.z])


def on_pose(m):
    p, q = m.pose.position, m.pose.orientation
    record("arm", stamp=stamp_of(m), frame_id=m.header.frame_id, position=[p.x, p.y, p.z],
           quat=[q.x, q.y, q.z, q.w])


def on_trajectory(m):
    record("arm", stamp=stamp_of(m), joint_names=list(m.joint_names),
           points=[{"positions": list(pt.positions), "velocities": list(pt.velocities),
                    "tfs": pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9}
                   for pt in m.points])


def on_applied(m):
    record("applied", stamp=stamp_of(m), action=list(m.position), **json.loads(m.header.frame_id))


def on_diagnostics(m):
    for s in m.status:
        if executor.lstrip("/") in s.name:
            level = s.level if isinstance(s.level, int) else ord(s.level)
            record("diag", stamp=stamp_of(m), level=level, message=s.message,
                   values={kv.key: kv.value for kv in s.values})


arm_type = {"twist": (TwistStamped, on_twist), "pose": (PoseStamped, on_pose),
            "joint_trajectory": (JointTrajectory, on_trajectory)}[cfg["output"]]
subs = {
    "arm": node.create_subscription(arm_type[0], topics["arm"], arm_type[1], reliable),
    "applied": node.create_subscription(JointState, f"{executor}/applied_action", on_applied,
                                        reliable),
    "events": node.create_subscription(String, f"{executor}/chunk_events", lambda m: record(
        "event", **json.loads(m.data)), reliable),
    "diag": node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, reliable),
}
if topics.get("gripper"):
    subs["gripper"] = node.create_subscription(Float64MultiArray, topics["gripper"], lambda m: record(
        "gripper", data=list(m.data)), reliable)


def publish_state():
    js = cfg.get("joint_states")
    t = rel()
    start_at = (js or {}).get("start_at")
    if js and state["joint_positions"] is not None and (
            start_at is None or (t is not None and t >= start_at)):
        msg = JointState(name=js["names"], position=[float(x) for x in state["joint_positions"]])
        msg.header.stamp = node.get_clock().now().to_msg()
        joint_pub.publish(msg)
    pose = cfg.get("eef_pose")
    if pose:
        msg = PoseStamped()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = pose.get("frame_id", "base_link")
        p, q = msg.pose.position, msg.pose.orientation
        p.x, p.y, p.z = pose["position"]
        q.x, q.y, q.z, q.w = pose["quat"]
        pose_pub.publish(msg)


node.create_timer(0.02, publish_state)


def send_chunk(spec):
    rows = spec.get("rows")
    flat = np.asarray(spec["flat"] if "flat" in spec else rows, dtype=np.float64).reshape(-1)
    stamp = now_s() - spec.get("delay_s", 0.0)
    msg = ActionChunk()
    ns = int(round(stamp * 1e9))
    msg.header.stamp.sec, msg.header.stamp.nanosec = ns // 10**9, ns % 10**9
    msg.header.frame_id = "base_link"
    msg.seq = int(spec["seq"])
    msg.policy_id = "scripted"
    msg.horizon, msg.action_dim = int(spec["horizon"]), int(spec["dim"])
    msg.n_action_steps = int(spec["n"])
    msg.control_period_s = float(spec.get("period", 0.05))
    msg.actions = float32_sequence(flat)
    chunk_pub.publish(msg)
    record("sent", seq=msg.seq, stamp=ns * 1e-9, rows=rows if rows is not None else None,
           flat=[None if math.isnan(x) else x for x in flat.tolist()])


def call_enable(value):
    future = enable_client.call_async(SetBool.Request(data=bool(value)))
    record("enable_call", data=bool(value))
    future.add_done_callback(lambda f: record("enable_result", data=bool(value),
                                              success=f.result().success,
                                              message=f.result().message))


def call_set(name, value):
    request = SetParameters.Request()
    request.parameters = [Parameter(name, value=value).to_parameter_msg()]
    future = param_client.call_async(request)
    future.add_done_callback(lambda f: record(
        "set_result", name=name, value=value, successful=f.result().results[0].successful,
        reason=f.result().results[0].reason))


def connected():
    if not chunk_pub.get_subscription_count():
        return False
    if not all(sub.get_publisher_count() for name, sub in subs.items() if name != "diag"):
        return False
    return enable_client.service_is_ready() and param_client.service_is_ready()


deadline = time.monotonic() + 60
while not connected():
    if time.monotonic() > deadline:
        record("error", message="executor not connected after 60 s")
        sys.exit(3)
    rclpy.spin_once(node, timeout_sec=0.05)
time.sleep(0.3)                     # let the other direction of discovery settle too
t0 = time.monotonic()
record("start")
timeline = list(cfg["timeline"])
try:
    while timeline or not state["done"]:
        while timeline and time.monotonic() - t0 >= timeline[0]["at"]:
            item = timeline.pop(0)
            if "chunk" in item:
                send_chunk(item["chunk"])
            elif "enable" in item:
                call_enable(item["enable"])
            elif "set" in item:
                for name, value in item["set"].items():
                    call_set(name, value)
            elif "joint_positions" in item:
                state["joint_positions"] = item["joint_positions"]
            elif "diag" in item:
                d = item["diag"]
                msg = DiagnosticArray()
                msg.header.stamp = node.get_clock().now().to_msg()
                msg.status = [DiagnosticStatus(level=bytes([d["level"]]),
                                               name=d["name"].replace("{prefix}", prefix),
                                               message=d.get("message", ""))]
                diag_pub.publish(msg)
                record("diag_sent", **d)
            elif "sigint" in item:
                record("sigint")
                os.kill(int(cfg["executor_pid"]), signal.SIGINT)
            elif "end" in item:
                state["done"] = True
        if state["done"] and not timeline:
            break
        wait = 0.01 if not timeline else max(0.0, min(0.01, timeline[0]["at"] - (time.monotonic() - t0)))
        rclpy.spin_once(node, timeout_sec=wait)
finally:
    record("exit")
    out.close()
    node.destroy_node()
    rclpy.try_shutdown()
