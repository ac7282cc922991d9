"""chunk_executor: oat_ros_interfaces/ActionChunk in, one robot command per control tick out.

On a real robot nothing consumes ActionChunk directly: arms are driven by ros2_control
controllers. This node queues the policy's chunks with `oat_ros.chunks.ChunkQueue` (the same
queue and semantics as the sim bridge's realtime mode) and, on a timer at `control_rate_hz`
(node clock: `use_sim_time` works), sends the action in force to a controller through the
selected output adapter (`oat_ros.executor_adapters`, messages in
`oat_ros.ros.command_adapters`).

Per control tick at time t (node clock)
---------------------------------------
* disabled: nothing is sent.
* watchdog: no accepted chunk for `watchdog_timeout_s` (since the last chunk, or since start /
  enable) -> the queue is cleared, hold, diagnostics ERROR. Same (state policy_error) when
  `policy_diagnostics_name` is set and the policy's /diagnostics status is ERROR/STALE, or
  stopped for `policy_diagnostics_timeout_s`. A new chunk (after the fault ends) resumes.
* nothing is sent before the first chunk accepted since start / enable.
* otherwise `ChunkQueue.next_action(t)`: steps already due when a chunk arrived are skipped by
  stamp (delay compensation: a chunk stamped s arriving at a starts at step
  floor((a - s) / control_period_s)); n_action_steps per chunk; overlap merged by
  `merge_rule` (latest | blend | ensemble); when no used step covers t the chunk's tail is
  used for `hold_grace_s` (late_policy hold), then -> hold.
* hold = zero twist (twist) / the last target (pose, joint_trajectory) + the last gripper
  command, streamed every tick (a joint/pose hold before any target was sent sends nothing).
* an action becomes a command (adapter), is limited (speeds, joint velocity, joint limits,
  workspace box) and checked (finite, inside the bounds); a command that cannot be made
  (no joint state / pose yet) or fails the check is not sent: hold instead ("blocked").

Chunks are validated on arrival (action_dim, shape, n_action_steps, finite, |a| <=
action_limit unless clipped, absolute joint targets inside the joint limits, newer stamp, not
entirely late); a rejected chunk leaves the queue unchanged and is reported on
~/chunk_events and in the diagnostics counters.

Topics (names are parameters; defaults shown)
---------------------------------------------
subscribes  /oat/action_chunk (ActionChunk, reliable), /joint_states (JointState;
            joint_trajectory output), /eef_pose (PoseStamped; pose output), /diagnostics
            (only with policy_diagnostics_name)
publishes   /joint_trajectory_controller/joint_trajectory (trajectory_msgs/JointTrajectory) |
            /servo_node/delta_twist_cmds (geometry_msgs/TwistStamped) | /target_pose
            (geometry_msgs/PoseStamped), /gripper_controller/commands
            (std_msgs/Float64MultiArray), /diagnostics (diagnostic_msgs/DiagnosticArray),
            ~/applied_action (sensor_msgs/JointState, debug: the action of every tick,
            frame_id = JSON {"src", "seq", "i", "w", "sent", "cmd", "limited", "why"}),
            ~/chunk_events (std_msgs/String, debug: JSON per chunk accepted / rejected /
            ignored and per queue clear)
services    ~/enable (std_srvs/SetBool) = the `enabled` parameter. Disabling sends one hold
            command (zero twist / last target), then nothing; enabling clears the queue and
            waits for a fresh chunk (targets start again from the measured state).
Every parameter is described in the PARAMS table below (and README.md, "chunk_executor").
"""
from __future__ import annotations

import array
import dataclasses
import json
import math
import signal
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from oat_ros_interfaces.msg import ActionChunk
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool

from oat_ros.chunks import LATE_POLICIES, MERGE_RULES, ChunkQueue, ChunkRejected, make_chunk
from oat_ros.executor_adapters import (JOINT_MODES, OUTPUTS, AdapterConfig, Command,
                                       CommandAdapter)
from oat_ros.ros import params as P
from oat_ros.ros.command_adapters import (MESSAGE_TYPES, arm_message, gripper_message,
                                          time_msg)

PANDA_JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
PANDA_LOWER = [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]
PANDA_UPPER = [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]


def _names(v):
    return None if v and all(isinstance(x, str) and x for x in v) else \
        "expected a non-empty list of non-empty names"


def _indices(v):
    return None if all(isinstance(x, int) and x >= 0 for x in v) else \
        "expected a list of action indices >= 0"


def _finite_list(v):
    return None if v and all(math.isfinite(x) for x in v) else "expected finite numbers"


def _finite(v):
    return None if math.isfinite(v) else "must be finite"


PARAMS = [
    P.Param("enabled", True, "Send commands. Also set by the ~/enable service (std_srvs/SetBool). "
            "false: one hold command, then nothing; true: wait for a fresh chunk.", runtime=True),
    P.Param("output", "twist", "Command adapter: joint_trajectory (trajectory_msgs/JointTrajectory), "
            "twist (geometry_msgs/TwistStamped end-effector velocity) or pose (geometry_msgs/PoseStamped "
            "integrated end-effector target).", choices=OUTPUTS),
    P.Param("control_rate_hz", 20.0, "Commands per second (node clock; use_sim_time works).",
            min=1.0, max=1000.0),
    # chunk queue (oat_ros.chunks)
    P.Param("merge_rule", "latest", "Overlapping chunks: latest (newest only), blend (linear crossfade "
            "over the overlap) or ensemble (ACT temporal ensemble, weights exp(-m * j)).",
            runtime=True, choices=MERGE_RULES),
    P.Param("late_policy", "hold", "No used step covers the tick: hold (after hold_grace_s of the "
            "chunk's tail) or continue (run the chunk to its horizon).", runtime=True,
            choices=LATE_POLICIES),
    P.Param("hold_grace_s", 0.1, "late_policy hold: keep executing the chunk's steps beyond "
            "n_action_steps this long before holding (applies to chunks received after a change).",
            runtime=True, min=0.0, max=60.0),
    P.Param("ensemble_m", 0.01, "merge_rule ensemble: weights exp(-m * j), j = 0 the oldest chunk.",
            runtime=True, min=-100.0, max=100.0),
    P.Param("n_action_steps", 0, "Override of the chunks' n_action_steps; 0 = the message's "
            "(applies to chunks received after a change).", runtime=True, min=0, max=100000),
    P.Param("watchdog_timeout_s", 1.0, "No accepted chunk for this long: clear the queue, hold, "
            "diagnostics ERROR (policy stalled or dead).", runtime=True, min=0.01, max=3600.0),
    P.Param("policy_diagnostics_name", "", "If set: a /diagnostics status whose name contains this "
            "(e.g. 'policy_node') at level ERROR or STALE holds the robot until the next OK/WARN one."),
    P.Param("policy_diagnostics_timeout_s", 5.0, "With policy_diagnostics_name: no such status for "
            "this long (once one was seen) holds the robot, diagnostics ERROR; 0 = off.",
            runtime=True, min=0.0, max=3600.0),
    # chunk validation
    P.Param("action_dim", 7, "Expected action_dim of every chunk.", min=1, max=1024),
    P.Param("action_limit", 1.0, "Chunks with a value outside [-limit, limit] are rejected "
            "(0 = no check).", runtime=True, min=0.0, max=1e6),
    P.Param("clip_actions", False, "Clip chunk values to [-action_limit, action_limit] instead "
            "of rejecting the chunk.", runtime=True),
    # action mapping + scaling
    P.Param("joint_names", PANDA_JOINTS, "Arm joints, in the controller's order (joint_trajectory; "
            "also the joints read from joint_states_topic).", check=_names),
    P.Param("joint_mode", "absolute", "joint_trajectory: absolute (action = joint positions) or "
            "delta (action = position change per chunk step, added to the measured joint state).",
            choices=JOINT_MODES),
    P.Param("joint_indices", list(range(7)), "Action index of each joint (same order as joint_names).",
            check=_indices),
    P.Param("linear_indices", [0, 1, 2], "Action indices of the end-effector x, y, z deltas (twist, pose).",
            check=_indices),
    P.Param("angular_indices", [3, 4, 5], "Action indices of the rotation-vector deltas (twist, pose).",
            check=_indices),
    P.Param("gripper_index", 6, "Action index of the gripper (-1 open .. +1 closed); -1 = none.",
            min=-1, max=1023),
    P.Param("joint_scale", 1.0, "Joint target (absolute) or delta (delta mode) = joint_scale * action.",
            runtime=True, check=_finite),
    P.Param("linear_scale_m", 0.05, "twist / pose: metres per unit action per chunk step "
            "(LIBERO OSC: 0.05); velocity = action * scale / control_period_s.", runtime=True,
            min=0.0, max=10.0),
    P.Param("angular_scale_rad", 0.5, "twist / pose: radians per unit action per chunk step "
            "(LIBERO OSC: 0.5).", runtime=True, min=0.0, max=10.0),
    # bounds
    P.Param("max_joint_velocity", 0.5, "rad/s per joint: a target moves at most this * tick from "
            "the previous target (else the measured position); 0 = no limit.", runtime=True,
            min=0.0, max=100.0),
    P.Param("joint_lower_limits", PANDA_LOWER, "Per joint (joint_names order); absolute chunks "
            "outside are rejected, delta targets clamped.", runtime=True, check=_finite_list),
    P.Param("joint_upper_limits", PANDA_UPPER, "Per joint (joint_names order).", runtime=True,
            check=_finite_list),
    P.Param("max_linear_speed", 0.25, "m/s, twist and pose: a faster end-effector velocity is "
            "scaled down (direction kept); 0 = no limit.",
            runtime=True, min=0.0, max=10.0),
    P.Param("max_angular_speed", 1.0, "rad/s, twist and pose: a faster rotation is scaled down; "
            "0 = no limit.",
            runtime=True, min=0.0, max=100.0),
    P.Param("workspace_min", [-1.0, -1.0, 0.0], "pose: lower corner (x, y, z) of the box the target "
            "is clamped to, in command_frame.", runtime=True, check=_finite_list),
    P.Param("workspace_max", [1.0, 1.0, 1.5], "pose: upper corner (x, y, z).", runtime=True,
            check=_finite_list),
    # gripper
    P.Param("gripper_open_position", 0.04, "Gripper position sent for action -1 (open).",
            runtime=True, check=_finite),
    P.Param("gripper_closed_position", 0.0, "Gripper position sent for action +1 (closed).",
            runtime=True, check=_finite),
    P.Param("gripper_binary", True, "true: closed if action > 0 else open; false: linear in between.",
            runtime=True),
    P.Param("gripper_joint_count", 1, "Values per gripper command (one per gripper joint of the "
            "controller).", min=1, max=16),
    # messages + topics
    P.Param("trajectory_time_from_start_s", 0.0, "joint_trajectory: time_from_start of the point; "
            "0 = one control period.", runtime=True, min=0.0, max=10.0),
    P.Param("command_frame", "base_link", "frame_id of twist and pose commands; the measured pose "
            "(eef_pose_topic) must be in this frame (it is not transformed)."),
    P.Param("chunk_topic", "/oat/action_chunk", "Input oat_ros_interfaces/ActionChunk topic."),
    P.Param("joint_trajectory_topic", "/joint_trajectory_controller/joint_trajectory",
            "output joint_trajectory: the controller's trajectory topic."),
    P.Param("twist_topic", "/servo_node/delta_twist_cmds", "output twist: TwistStamped topic."),
    P.Param("pose_topic", "/target_pose", "output pose: PoseStamped topic."),
    P.Param("gripper_topic", "/gripper_controller/commands", "std_msgs/Float64MultiArray gripper "
            "commands; empty = no gripper output."),
    P.Param("joint_states_topic", "/joint_states", "sensor_msgs/JointState (joint_trajectory output)."),
    P.Param("eef_pose_topic", "/eef_pose", "Measured end-effector PoseStamped (pose output)."),
    P.Param("diagnostics_period_s", 1.0, "Diagnostics period (also published at every state change).",
            min=0.05, max=3600.0),
]
TABLE = {p.name: p for p in PARAMS}
QUEUE_PARAMS = ("merge_rule", "late_policy", "hold_grace_s", "ensemble_m")
ADAPTER_FIELDS = tuple(f.name for f in dataclasses.fields(AdapterConfig))
# state -> diagnostics level
LEVELS = {"waiting": DiagnosticStatus.OK, "executing": DiagnosticStatus.OK,
          "disabled": DiagnosticStatus.OK, "grace": DiagnosticStatus.WARN,
          "holding": DiagnosticStatus.WARN, "blocked": DiagnosticStatus.WARN,
          "watchdog": DiagnosticStatus.ERROR, "policy_error": DiagnosticStatus.ERROR}


def _plain(value):
    if isinstance(value, (array.array, tuple, np.ndarray)):
        return list(value)
    return value


def adapter_config(p: dict) -> AdapterConfig:
    return AdapterConfig(**{name: _plain(p[name]) for name in ADAPTER_FIELDS})


def check_parameters(p: dict) -> str | None:
    """Why the parameter set `p` cannot be used (first problem), or None."""
    for spec in PARAMS:
        why = spec.validate(p[spec.name])
        if why:
            return why
    return adapter_config(p).check()


def _descriptor(spec: P.Param):
    d = spec.descriptor()
    if not spec.runtime:
        d.description = d.description.replace(
            " Needs a reload: refused while the node is active.", " Read-only: set at start-up.")
        d.read_only = True
    return d


def _stamp_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class ChunkExecutor(Node):
    """The executor node (see module docstring). Raises ValueError on bad parameters."""

    def __init__(self, **kwargs):
        super().__init__("chunk_executor", **kwargs)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        p = {spec.name: _plain(self.get_parameter(spec.name).value) for spec in PARAMS}
        why = check_parameters(p)
        if why:
            raise ValueError(f"chunk_executor: bad parameters: {why}")
        self._p = p
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self.adapter = CommandAdapter(adapter_config(p))
        self.queue = ChunkQueue(merge=p["merge_rule"], late_policy=p["late_policy"],
                                hold_grace_s=p["hold_grace_s"], ensemble_m=p["ensemble_m"])
        self.period_s = 1.0 / p["control_rate_hz"]
        self.output = p["output"]
        self._enabled = bool(p["enabled"])
        self._since_ns: int | None = None        # first tick / enable time (watchdog reference;
        #                                          the first tick: /clock may not run yet)
        self._last_chunk_ns: int | None = None   # arrival of the newest accepted chunk
        self._started = False                    # a chunk was accepted since start / enable
        self._state, self._why = ("waiting" if self._enabled else "disabled"), ""
        self._policy_fault: str | None = None
        self._policy_seen_ns: int | None = None     # last matching policy status
        self._joints: dict = {}
        self._pose = None
        self._last_tick_ns: int | None = None
        self._last_warn: dict = {}
        self._stats = {k: 0 for k in (
            "chunks_received", "chunks_accepted", "chunks_rejected", "chunks_ignored_disabled",
            "commands_sent", "hold_commands", "blocked_ticks", "late_ticks", "queue_clears")}
        self._limited: dict = {}
        self._last_rejection = ""
        self._last_seq = None

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        topic = {"joint_trajectory": p["joint_trajectory_topic"], "twist": p["twist_topic"],
                 "pose": p["pose_topic"]}[self.output]
        self.arm_pub = self.create_publisher(MESSAGE_TYPES[self.output], topic, reliable)
        self.gripper_pub = (self.create_publisher(Float64MultiArray, p["gripper_topic"], reliable)
                            if p["gripper_topic"] and p["gripper_index"] >= 0 else None)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.applied_pub = self.create_publisher(JointState, "~/applied_action", reliable)
        self.events_pub = self.create_publisher(String, "~/chunk_events", reliable)
        self.create_subscription(ActionChunk, p["chunk_topic"], self._on_chunk, reliable)
        if self.output == "joint_trajectory":
            self.create_subscription(JointState, p["joint_states_topic"], self._on_joints,
                                     qos_profile_sensor_data)
        if self.output == "pose":
            self.create_subscription(PoseStamped, p["eef_pose_topic"], self._on_pose,
                                     qos_profile_sensor_data)
        if p["policy_diagnostics_name"]:
            self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self._timers = [self.create_timer(self.period_s, self._tick),
                        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)]
        self.get_logger().info(
            f"output {self.output} on {topic} at {p['control_rate_hz']:g} Hz, merge "
            f"{p['merge_rule']}, late {p['late_policy']} (grace {p['hold_grace_s']:g} s), "
            f"watchdog {p['watchdog_timeout_s']:g} s, {'enabled' if self._enabled else 'disabled'}")

    # ------------------------------------------------------------------ helpers
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _warn(self, key: str, text: str, period_s: float = 2.0):
        now = time.monotonic()
        if now - self._last_warn.get(key, -1e9) >= period_s:
            self._last_warn[key] = now
            self.get_logger().warning(text)

    def _event(self, **fields):
        self.events_pub.publish(String(data=json.dumps(fields)))

    def _set_state(self, state: str, why: str = ""):
        if state == self._state and why == self._why:
            return
        changed = state != self._state
        self._state, self._why = state, why
        if changed:
            text = f"state {state}" + (f": {why}" if why else "")
            if LEVELS[state] == DiagnosticStatus.OK:
                self.get_logger().info(text)
            else:
                self.get_logger().warning(text)
            self._publish_diagnostics()

    def _clear_queue(self, why: str):
        if len(self.queue):
            self.queue.clear()
            self._stats["queue_clears"] += 1
            self._event(event="cleared", time=self._now_ns() * 1e-9, reason=why)

    # ------------------------------------------------------------------ inputs
    def _on_chunk(self, msg: ActionChunk):
        now_ns = self._now_ns()
        self._stats["chunks_received"] += 1
        stamp = _stamp_s(msg.header.stamp)
        base = {"seq": int(msg.seq), "stamp": stamp, "arrival": now_ns * 1e-9}
        if not self._enabled:
            self._stats["chunks_ignored_disabled"] += 1
            self._event(event="ignored", reason="disabled", **base)
            return
        p = self._p
        limit = p["action_limit"] or None
        try:
            chunk, clipped = make_chunk(
                stamp, msg.actions, msg.horizon, msg.action_dim, msg.n_action_steps,
                msg.control_period_s, msg.seq, expected_dim=p["action_dim"],
                clip=limit if p["clip_actions"] else None, limit=limit,
                n_action_steps_override=p["n_action_steps"] or None,
                default_period_s=self.period_s)
            reason = self.adapter.check_rows(chunk.actions)
            if reason:
                raise ChunkRejected(reason)
            ok, reason = self.queue.add(chunk, now_ns * 1e-9)
            if not ok:
                raise ChunkRejected(reason)
        except ChunkRejected as err:
            self._stats["chunks_rejected"] += 1
            self._last_rejection = f"seq {msg.seq}: {err.reason}"
            self._warn("reject", f"rejected chunk seq {msg.seq}: {err.reason}", 1.0)
            self._event(event="rejected", reason=err.reason, **base)
            return
        self._stats["chunks_accepted"] += 1
        self._last_chunk_ns = now_ns
        self._last_seq = chunk.seq
        self._started = True
        self._event(event="accepted", start=max(0, chunk.step_at(now_ns * 1e-9)),
                    n=chunk.n_action_steps, horizon=chunk.horizon,
                    period=chunk.control_period_s, clipped=clipped, **base)

    def _on_joints(self, msg: JointState):
        if len(msg.position) != len(msg.name):
            self._warn("joints", f"JointState with {len(msg.name)} names but "
                                 f"{len(msg.position)} positions ignored")
            return
        for name, pos in zip(msg.name, msg.position):
            if math.isfinite(pos):
                self._joints[name] = float(pos)

    def _on_pose(self, msg: PoseStamped):
        p, q = msg.pose.position, msg.pose.orientation
        pos, quat = np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])
        frame = msg.header.frame_id
        if frame and frame != self._p["command_frame"]:
            self._warn("pose_frame", f"end-effector pose in frame '{frame}', command_frame is "
                                     f"'{self._p['command_frame']}': it is not transformed", 10.0)
        if np.isfinite(pos).all() and np.isfinite(quat).all():
            self._pose = (pos, quat)

    def _on_diagnostics(self, msg: DiagnosticArray):
        name = self._p["policy_diagnostics_name"]
        for status in msg.status:
            if name not in status.name:
                continue
            self._policy_seen_ns = self._now_ns()
            level = status.level if isinstance(status.level, int) else ord(status.level)
            if level >= 2:   # ERROR, STALE
                self._policy_fault = f"policy status '{status.name}': {status.message}"
            else:
                self._policy_fault = None

    def _on_enable(self, request, response):
        result = self.set_parameters([Parameter("enabled", value=bool(request.data))])[0]
        response.success = bool(result.successful)
        response.message = ("enabled" if request.data else "disabled") if result.successful \
            else result.reason
        return response

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params):
        candidate = dict(self._p)
        for param in params:
            if param.name in TABLE:
                candidate[param.name] = _plain(param.value)
        why = check_parameters(candidate)
        if why:
            self.get_logger().warning(f"parameter change refused: {why}")
            return SetParametersResult(successful=False, reason=why)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params):
        names = set()
        for param in params:
            if param.name in TABLE:
                self._p[param.name] = _plain(param.value)
                names.add(param.name)
        p = self._p
        for name in names & set(QUEUE_PARAMS):
            setattr(self.queue, {"merge_rule": "merge"}.get(name, name), p[name])
        if names & set(ADAPTER_FIELDS):
            self.adapter.cfg = adapter_config(p)
        if names - {"enabled"}:
            self.get_logger().info(f"parameters changed: {sorted(names - {'enabled'})}")
        if "enabled" in names:
            self._set_enabled(bool(p["enabled"]))

    def _set_enabled(self, enabled: bool):
        if enabled == self._enabled:
            return
        now_ns = self._now_ns()
        if not enabled:
            if self._started:
                self._send_hold(now_ns, "disabled", "disabled")
            self._enabled = False
            self._clear_queue("disabled")
            self._started = False
            self._set_state("disabled")
        else:
            self._clear_queue("enabled")
            self.adapter.reset()
            self._enabled, self._started = True, False
            self._since_ns, self._last_chunk_ns = now_ns, None
            self._set_state("waiting", "enabled: waiting for a fresh chunk")

    # ------------------------------------------------------------------ control tick
    def _tick(self):
        now_ns = self._now_ns()
        if self._last_tick_ns is not None and now_ns - self._last_tick_ns > 1.5e9 * self.period_s:
            self._stats["late_ticks"] += 1
        if self._last_tick_ns is not None and now_ns < self._last_tick_ns:
            # the clock jumped back (sim time restarted): stamps of queued chunks are meaningless
            self.get_logger().warning("clock jumped back: clearing the chunk queue")
            self._clear_queue("clock jumped back")
            self._since_ns, self._last_chunk_ns = now_ns, None
        self._last_tick_ns = now_ns
        if not self._enabled:
            return
        if self._since_ns is None:
            self._since_ns = now_ns
        p = self._p
        ref = self._last_chunk_ns if self._last_chunk_ns is not None else self._since_ns
        age = (now_ns - ref) * 1e-9
        fault = None
        if age > p["watchdog_timeout_s"]:
            fault = ("watchdog", f"no chunk for {age:.2f} s (watchdog_timeout_s "
                                 f"{p['watchdog_timeout_s']:g})")
        elif self._policy_fault:
            fault = ("policy_error", self._policy_fault)
        elif self._policy_seen_ns is not None and p["policy_diagnostics_timeout_s"] > 0:
            silent = (now_ns - self._policy_seen_ns) * 1e-9
            if silent > p["policy_diagnostics_timeout_s"]:
                fault = ("policy_error", f"no status from the policy for {silent:.2f} s "
                                         f"(policy_diagnostics_timeout_s "
                                         f"{p['policy_diagnostics_timeout_s']:g})")
        if fault:
            self._clear_queue(fault[0])
            self._set_state(*fault)
            if self._started:
                self._send_hold(now_ns, fault[0], fault[1])
            return
        if not self._started:
            self._set_state("waiting", "no chunk yet")
            return
        action, info = self.queue.next_action(now_ns * 1e-9)
        if action is None:
            self._set_state("holding", "no chunk covers this step (policy late or stalled)")
            self._send_hold(now_ns, "hold", self._why)
            return
        cmd, why = self.adapter.command(action, self.queue.newest.control_period_s, self.period_s,
                                        self._joints, self._pose)
        src = {"source": info["source"], "seq": info["seqs"], "i": info["steps"],
               "w": [round(w, 6) for w in info["weights"]]}
        if cmd is None:
            self._stats["blocked_ticks"] += 1
            self._set_state("blocked", why)
            self._send_hold(now_ns, "blocked", why, action=action, info=src)
            return
        if info["source"] in ("grace", "continue"):
            self._set_state("grace" if info["source"] == "grace" else "executing",
                            "policy late: executing the chunk beyond n_action_steps"
                            if info["source"] == "grace" else "")
        else:
            self._set_state("executing")
        for name in cmd.limited:
            self._limited[name] = self._limited.get(name, 0) + 1
            self._warn(f"limit:{name}", f"command limited: {name}", 5.0)
        self._publish(cmd, now_ns, action, src)

    def _send_hold(self, now_ns: int, src: str, why: str, action=None, info=None):
        cmd = self.adapter.hold()
        self._publish(cmd, now_ns, action, {**(info or {}), "source": src}, why=why)

    def _publish(self, cmd: Command | None, now_ns: int, action, info: dict, why: str = ""):
        sent = cmd is not None
        if sent:
            if cmd.hold:
                self._stats["hold_commands"] += 1
            self.arm_pub.publish(arm_message(
                cmd, self._p["joint_names"], now_ns, self._p["command_frame"],
                self._p["trajectory_time_from_start_s"] or self.period_s))
            if self.gripper_pub is not None and cmd.gripper is not None:
                self.gripper_pub.publish(gripper_message(cmd.gripper,
                                                         self._p["gripper_joint_count"]))
            self._stats["commands_sent"] += 1
        applied = JointState()
        applied.header.stamp = time_msg(now_ns)
        meta = {"src": info.get("source"), "seq": info.get("seq", []), "i": info.get("i", []),
                "w": info.get("w", []), "sent": sent,
                "cmd": cmd.values().tolist() if sent else None,
                "gripper": cmd.gripper if sent else None,
                "limited": list(cmd.limited) if sent else [], "why": why}
        applied.header.frame_id = json.dumps(meta)
        if action is not None:
            applied.name = [f"a{i}" for i in range(len(action))]
            applied.position = [float(x) for x in action]
        self.applied_pub.publish(applied)

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self):
        now_ns = self._now_ns()
        p = self._p
        values = {"state": self._state, "why": self._why, "enabled": self._enabled,
                  "output": self.output, "merge_rule": p["merge_rule"],
                  "late_policy": p["late_policy"], "queued_chunks": len(self.queue),
                  "last_chunk_seq": self._last_seq,
                  "last_chunk_age_s": ((now_ns - self._last_chunk_ns) * 1e-9
                                       if self._last_chunk_ns is not None else -1.0),
                  "last_rejection": self._last_rejection, **self._stats,
                  **{f"limited_{k}": v for k, v in sorted(self._limited.items())}}
        level = LEVELS[self._state]
        status = DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name().lstrip('/')}: chunk executor",
            hardware_id=self.output,
            message=self._state + (f": {self._why}" if self._why else ""),
            values=[KeyValue(key=k, value=(f"{v:.3f}" if isinstance(v, float) else str(v)))
                    for k, v in values.items()])
        arr = DiagnosticArray()
        arr.header.stamp = time_msg(now_ns)
        arr.status = [status]
        self.diag_pub.publish(arr)

    def stop_motion(self):
        """Shutdown: stop the control tick, then one hold command (zero twist / last target)
        if anything was sent."""
        for timer in self._timers:
            timer.cancel()
        if self._enabled and self._started:
            self._send_hold(self._now_ns(), "shutdown", "shutdown")


def main(args=None) -> int:
    """Run the executor until SIGINT / SIGTERM (then one hold command). Exit code 0, or 2 on
    bad parameters."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = ChunkExecutor()
    except ValueError as err:
        print(err, file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        node.stop_motion()
        end = time.monotonic() + 0.3          # let the last reliable messages go out
        while time.monotonic() < end and rclpy.ok():
            executor.spin_once(timeout_sec=0.05)
    except ExternalShutdownException:
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
