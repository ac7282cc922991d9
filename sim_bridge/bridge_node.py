"""LIBERO sim bridge node: runs LIBERO episodes and exchanges observations / action chunks
over ROS 2. All stamps are simulation time (the capture time of the observation).

Graph (topic names are parameters; defaults shown)
--------------------------------------------------
publishes
  /camera/agentview/image_raw, /camera/eye_in_hand/image_raw  sensor_msgs/Image rgb8 128x128,
      upright (flipped vertically like OAT's training data) if `flip_vertical`; frame_id = the
      LIBERO camera name ("agentview", "robot0_eye_in_hand"). Rendered only for the
      observations a policy needs (see below): rendering costs ~95 ms per camera.
  /joint_states   sensor_msgs/JointState: robot0_joint1..7 (pos, vel) + robot0_finger_joint1/2
                  (robot0_gripper_qpos / _qvel). Every control step.
  /eef_pose       geometry_msgs/PoseStamped (frame `world_frame`): robot0_eef_pos and
                  robot0_eef_quat (xyzw in both LIBERO and ROS). Every control step.
  /clock          rosgraph_msgs/Clock: sim time, after every step (monotonic over the run;
                  the run starts at 1.0 s; 0.05 s per control step, settle steps included).
  /oat/episode    oat_ros_interfaces/Episode (reliable, transient_local, depth 20): START
                  (reason "start"), END (reason success | timeout), ABORT (reason reset |
                  next_episode | policy_timeout | shutdown | error).
  /oat/chunk_request  std_msgs/Header: stamp = capture time of the observation a chunk is
                  wanted for (frame_id = the task uid as a decimal string). Published right
                  after that observation.
  ~/applied_action    sensor_msgs/JointState (debug): the 7-D action applied in each step,
                  stamp = sim time at the start of the step, frame_id = JSON
                  {"src": lockstep|chunk|blend|ensemble|continue|grace|hold|settle|forced,
                   "seq": [...], "i": [...], "w": [...]}.
  ~/rejected_chunks   std_msgs/String (debug): JSON {"seq", "stamp", "reason", "count"} per
                  rejected chunk.
subscribes
  /oat/action_chunk  oat_ros_interfaces/ActionChunk, validated (action_dim == 7,
                  len == horizon x action_dim, finite, within [-1, 1] after the optional clip,
                  n_action_steps in [1, horizon] unless overridden): a bad chunk is rejected with
                  a logged reason and a counter, and the robot holds ([0]*6 + last gripper).
services (std_srvs/Trigger)
  ~/reset          abort the running episode (ABORT "reset"), rebuild the plan from the current
                   parameters and start its first episode: set suite / task_index /
                   init_state_index / ... parameters, then call this to select a task.
  ~/next_episode   abort the running episode (ABORT "next_episode") and start the next one of
                   the plan (after its end: the next init state of the last task).
  ~/force_success  debugging: teleport the goal objects into their goal (libero-here.md §4);
                   END success at once if the check holds (open / close goals), else after
                   hold steps until it does (in / on goals need contact: <= 20 steps).

Observations and requests
-------------------------
Every control step publishes /clock, /joint_states and /eef_pose; images are rendered for
the last `obs_history_steps` steps before each request (the policy uses n_obs_steps = 2
consecutive control steps). Images, joint states and pose of one step share one stamp.

* lockstep (default): after the settle steps, publish a request, wait (wall clock, at most
  `chunk_timeout_s`, else ABORT "policy_timeout") for the chunk whose header.stamp equals the
  request stamp, execute exactly its first n_action_steps rows (one per 0.05 s control step),
  request again. A rejected chunk answering the request gives one hold step, then a new
  request. Chunks with other stamps are dropped (rejected: "does not match").
* realtime: the sim steps on a wall-clock timer at 20 Hz (slower if a step takes longer); each
  step applies `ChunkQueue.next_action(sim_time)` (merge_rule, late_policy, hold_grace_s,
  ensemble_m; None -> hold). Requests every round(20 / camera_rate_hz) steps (images for the
  last obs_history_steps of them). A chunk is queued with arrival time = current sim time, so
  the steps already due are skipped (delay compensation).

Episodes: reset to the init state (or a seeded reset), `settle_steps` x ([0]*6 + [-1]) not
counted as steps, START, then control steps until success (END "success"), step count >=
max_steps (END "timeout"), or an abort. Plans: see `sim_bridge.episodes`.
"""
from __future__ import annotations

import json
import math
import signal
import threading
import time
import traceback
from collections import deque

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from oat_ros_interfaces.msg import ActionChunk, Episode
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger

from oat_ros.chunks import (LATE_POLICIES, MERGE_RULES, ChunkQueue, ChunkRejected,
                            lockstep_actions, make_chunk)
from oat_ros.ros.messages import ns_to_stamp, stamp_to_ns
from sim_bridge.episodes import EpisodeSpec, build_plan, successor
from sim_bridge.libero_env import (ARM_JOINTS, CAMERAS, CONTROL_PERIOD_S, FINGER_JOINTS,
                                   SETTLE_ACTION, camera_name, check_task)

ACTION_DIM = 7
PERIOD_NS = int(round(CONTROL_PERIOD_S * 1e9))
CLOCK_START_NS = 1_000_000_000
STAMP_TOLERANCE_NS = 1_000_000          # a chunk answers a request if stamps differ < 1 ms
FORCE_SUCCESS_MAX_STEPS = 20
ACTION_NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]

# name: (default, description, read_only)
PARAMETERS = {
    "clock_mode": ("lockstep", "lockstep | realtime (see module doc)", True),
    "suite": ("libero_10", "LIBERO suite: libero_spatial | libero_object | libero_goal | "
              "libero_10 | libero_90", False),
    "task_index": (0, "task index within the suite", False),
    "init_state_index": (0, "init state index 0..49; -1 = seeded reset (np.random.seed(seed))",
                         False),
    "seed": (0, "seed of seeded resets (init_state_index -1); + episode position", False),
    "max_steps": (0, "control steps per episode before END timeout; 0 = suite default "
                  "(spatial 220, object 280, goal 300, libero_10 520, libero_90 400)", False),
    "settle_steps": (10, "no-op steps [0]*6+[-1] after each reset (not counted)", False),
    "run_id": ("", "id of the evaluation run in Episode messages; '' = sim-<unix time>", False),
    "episodes": ([], "plan: list of 'suite:task:init' | 'task:init' | 'task' (wins if set)",
                 False),
    "task_indices": ([], "plan: tasks (empty = [task_index])", False),
    "init_states": ([], "plan: init states per task (empty = init_state_index + j)", False),
    "num_episodes": (0, "plan: episodes per task; 0 = len(init_states) or 1", False),
    "autostart": (True, "start the plan at startup (else wait for ~/reset)", False),
    "exit_when_done": (False, "exit the process after the last episode of the plan", False),
    "cameras": (["agentview", "eye_in_hand"], "cameras to render and publish "
                "(agentview, eye_in_hand); [] = none", True),
    "image_size": (128, "camera image height = width (OAT: 128)", True),
    "flip_vertical": (True, "publish upright images (img[::-1]) as OAT trains on", True),
    "obs_history_steps": (2, "consecutive steps with images before each request", False),
    "camera_rate_hz": (5.0, "realtime: request / observation-group rate (sim time)", False),
    "n_action_steps": (0, "override of the chunks' n_action_steps; 0 = use the message", False),
    "clip_actions": (True, "clip chunk actions to [-1, 1] before the range check", False),
    "merge_rule": ("latest", "realtime: latest | blend | ensemble (oat_ros.chunks)", False),
    "late_policy": ("hold", "realtime, no chunk covers the step: hold | continue", False),
    "hold_grace_s": (0.0, "realtime, hold: keep the chunk's unused tail this long", False),
    "ensemble_m": (0.01, "realtime, ensemble: weights exp(-m * j), j = 0 oldest (ACT)", False),
    "chunk_timeout_s": (30.0, "wall-clock wait for a chunk before ABORT policy_timeout "
                        "(read while waiting: a change applies at once)", False),
    "wait_for_policy_s": (60.0, "lockstep: before an episode, wait this long for a subscriber "
                          "of the request topic; 0 = don't wait", False),
    "realtime_wait_first_chunk": (True, "realtime: hold the sim until the first chunk of an "
                                  "episode arrives", False),
    "force_success_at_step": (-1, "debug: force success when the step count reaches this; "
                              "-1 = never", False),
    "world_frame": ("world", "frame_id of /eef_pose", True),
    "publish_clock": (True, "publish /clock", True),
    "agentview_image_topic": ("/camera/agentview/image_raw", "topic", True),
    "eye_in_hand_image_topic": ("/camera/eye_in_hand/image_raw", "topic", True),
    "joint_states_topic": ("/joint_states", "topic", True),
    "eef_pose_topic": ("/eef_pose", "topic", True),
    "clock_topic": ("/clock", "topic", True),
    "episode_topic": ("/oat/episode", "topic", True),
    "chunk_request_topic": ("/oat/chunk_request", "topic", True),
    "action_chunk_topic": ("/oat/action_chunk", "topic", True),
}
_LIST_PARAMS = {"episodes": str, "task_indices": int, "init_states": int, "cameras": str}
_PLAN_KEYS = ("suite", "task_index", "init_state_index", "seed", "max_steps", "episodes",
              "task_indices", "init_states", "num_episodes")


def check_parameters(p: dict) -> str | None:
    """Why the parameter set `p` is invalid, or None."""
    for name, kind in _LIST_PARAMS.items():
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in p[name]):
            return f"{name}: expected a list of {kind.__name__}"
    if p["clock_mode"] not in ("lockstep", "realtime"):
        return f"clock_mode '{p['clock_mode']}' not in (lockstep, realtime)"
    if p["merge_rule"] not in MERGE_RULES:
        return f"merge_rule '{p['merge_rule']}' not in {MERGE_RULES}"
    if p["late_policy"] not in LATE_POLICIES:
        return f"late_policy '{p['late_policy']}' not in {LATE_POLICIES}"
    for cam in p["cameras"]:
        try:
            camera_name(cam)
        except ValueError as err:
            return f"cameras: {err}"
    checks = [
        ("settle_steps", p["settle_steps"] >= 0, ">= 0"),
        ("obs_history_steps", p["obs_history_steps"] >= 1, ">= 1"),
        ("camera_rate_hz", 0 < p["camera_rate_hz"] <= 1 / CONTROL_PERIOD_S, "in (0, 20]"),
        ("n_action_steps", p["n_action_steps"] >= 0, ">= 0 (0 = from the message)"),
        ("hold_grace_s", math.isfinite(p["hold_grace_s"]) and p["hold_grace_s"] >= 0, ">= 0"),
        ("ensemble_m", math.isfinite(p["ensemble_m"]), "finite"),
        ("chunk_timeout_s", p["chunk_timeout_s"] > 0, "> 0"),
        ("wait_for_policy_s", p["wait_for_policy_s"] >= 0, ">= 0"),
        ("image_size", 8 <= p["image_size"] <= 1024, "in [8, 1024]"),
        ("force_success_at_step", p["force_success_at_step"] >= -1, ">= -1"),
    ]
    for name, ok, expected in checks:
        if not ok:
            return f"{name} {p[name]}: expected {expected}"
    try:
        check_task(p["suite"], p["task_index"], p["init_state_index"])
        build_plan(p)
    except ValueError as err:
        return str(err)
    return None


class _Abort(Exception):
    """Ends the running episode with an ABORT event of this reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Episode:
    """Book-keeping of the running episode."""

    def __init__(self, spec: EpisodeSpec, index: int, task, start_ns: int, cfg: dict):
        self.spec, self.index, self.task, self.start_ns, self.cfg = spec, index, task, start_ns, cfg
        self.step = 0
        self.chunks_executed = 0
        self.used_seqs = set()
        self.gripper = SETTLE_ACTION[6]
        self.outcome = None          # (event, success, reason)


class SimBridge(Node):
    """The bridge node. `env` may be injected (tests/bench); default: a `LiberoEnv`."""

    def __init__(self, env=None, **node_kwargs):
        super().__init__("sim_bridge", **node_kwargs)
        for name, (default, description, read_only) in PARAMETERS.items():
            descriptor = ParameterDescriptor(description=description, read_only=read_only,
                                             dynamic_typing=name in _LIST_PARAMS)
            self.declare_parameter(name, default, descriptor)
        self._params = {name: self.get_parameter(name).value for name in PARAMETERS}
        for name in _LIST_PARAMS:
            self._params[name] = list(self._params[name] or [])
        reason = check_parameters(self._params)
        if reason:
            raise ValueError(f"sim_bridge: bad parameters: {reason}")
        self.add_on_set_parameters_callback(self._on_set_parameters)
        p = self._params
        self.run_id = p["run_id"] or f"sim-{int(time.time())}"
        self.lockstep = p["clock_mode"] == "lockstep"
        self.cameras = [camera_name(c) for c in p["cameras"]]

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        topic = {CAMERAS[c]: p[f"{CAMERAS[c]}_image_topic"] for c in self.cameras}
        self.image_pubs = {c: self.create_publisher(Image, topic[CAMERAS[c]], reliable)
                           for c in self.cameras}
        self.joint_pub = self.create_publisher(JointState, p["joint_states_topic"], reliable)
        self.pose_pub = self.create_publisher(PoseStamped, p["eef_pose_topic"], reliable)
        self.clock_pub = (self.create_publisher(Clock, p["clock_topic"], reliable)
                          if p["publish_clock"] else None)
        self.episode_pub = self.create_publisher(Episode, p["episode_topic"], latched)
        self.request_pub = self.create_publisher(Header, p["chunk_request_topic"], reliable)
        self.applied_pub = self.create_publisher(JointState, "~/applied_action", reliable)
        self.rejected_pub = self.create_publisher(String, "~/rejected_chunks", reliable)
        self.create_subscription(ActionChunk, p["action_chunk_topic"], self._on_chunk, reliable)
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self.create_service(Trigger, "~/next_episode", self._srv_next)
        self.create_service(Trigger, "~/force_success", self._srv_force_success)

        self._env = env
        self._cv = threading.Condition()
        self._inbox = deque(maxlen=32)     # lockstep: (stamp_ns, chunk | None, reason, seq)
        self._queue = None                 # realtime: ChunkQueue of the running episode
        self._command = None               # reset | next_episode | stop
        self._force = False
        self._sim_ns = CLOCK_START_NS
        self._episode = None
        self._episode_index = 0
        self._last_chunk_wall = time.monotonic()
        self.rejected_count = 0
        self.exit_code = 0
        self.finished = threading.Event()
        self.last_outcome = None           # (event, success, reason) of the last episode
        self._thread = None

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        candidate = dict(self._params)
        for param in params:
            value = param.value
            if param.name in _LIST_PARAMS:
                value = list(value or [])
            candidate[param.name] = value
        reason = check_parameters(candidate)
        if reason:
            self.get_logger().warning(f"parameter change rejected: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        self._params = candidate
        return SetParametersResult(successful=True)

    @property
    def params(self) -> dict:
        return self._params

    # ------------------------------------------------------------------ services
    def _command_request(self, command: str, response):
        with self._cv:
            self._command = command
            self._cv.notify_all()
        response.success = True
        response.message = f"{command} requested"
        return response

    def _srv_reset(self, _request, response):
        return self._command_request("reset", response)

    def _srv_next(self, _request, response):
        return self._command_request("next_episode", response)

    def _srv_force_success(self, _request, response):
        with self._cv:
            running = self._episode is not None
            self._force = running
            self._cv.notify_all()
        response.success = running
        response.message = "forcing success" if running else "no episode running"
        return response

    def request_stop(self) -> None:
        with self._cv:
            self._command = "stop"
            self._cv.notify_all()

    # ------------------------------------------------------------------ chunks
    def _on_chunk(self, msg: ActionChunk) -> None:
        stamp_ns = stamp_to_ns(msg.header.stamp)
        p = self._params
        try:
            chunk, _clipped = make_chunk(
                stamp_ns * 1e-9, np.frombuffer(msg.actions, dtype=np.float32)
                if len(msg.actions) else np.zeros(0), msg.horizon, msg.action_dim,
                msg.n_action_steps, msg.control_period_s, msg.seq, expected_dim=ACTION_DIM,
                clip=1.0 if p["clip_actions"] else None, limit=1.0,
                n_action_steps_override=p["n_action_steps"] or None,
                default_period_s=CONTROL_PERIOD_S)
            reason = ""
        except ChunkRejected as err:
            chunk, reason = None, err.reason
        with self._cv:
            if self.lockstep:
                self._inbox.append((stamp_ns, chunk, reason, msg.seq))
                self._cv.notify_all()
                return
            if chunk is not None:
                episode = self._episode
                if episode is None or self._queue is None:
                    reason = "no episode running"
                elif stamp_ns < episode.start_ns:
                    reason = "stamp before the episode start (previous episode)"
                else:
                    ok, reason = self._queue.add(chunk, now=self._sim_ns * 1e-9)
                    if ok:
                        self._last_chunk_wall = time.monotonic()
                        self._cv.notify_all()
                        return
        self._reject(msg.seq, stamp_ns, reason)

    def _reject(self, seq: int, stamp_ns: int, reason: str) -> None:
        self.rejected_count += 1
        self.get_logger().warning(f"rejected chunk seq {seq} stamp {stamp_ns * 1e-9:.3f}: "
                                  f"{reason} (rejected so far: {self.rejected_count})")
        self.rejected_pub.publish(String(data=json.dumps(
            {"seq": int(seq), "stamp": stamp_ns * 1e-9, "reason": reason,
             "count": self.rejected_count})))

    # ------------------------------------------------------------------ publishing
    def _publish_observation(self, obs, stamp_ns: int) -> None:
        header_stamp = ns_to_stamp(stamp_ns)
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=header_stamp))
        for cam, img in obs.images.items():
            pub = self.image_pubs.get(cam)
            if pub is None:
                continue
            msg = Image()
            msg.header.stamp = header_stamp
            msg.header.frame_id = cam
            msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
            msg.encoding = "rgb8"
            msg.is_bigendian = 0
            msg.step = int(img.shape[1]) * 3
            msg.data = img.tobytes()
            pub.publish(msg)
        js = JointState()
        js.header.stamp = header_stamp
        js.name = list(ARM_JOINTS + FINGER_JOINTS)
        js.position = np.concatenate([obs.joint_pos, obs.gripper_qpos]).tolist()
        js.velocity = np.concatenate([obs.joint_vel, obs.gripper_qvel]).tolist()
        self.joint_pub.publish(js)
        pose = PoseStamped()
        pose.header.stamp = header_stamp
        pose.header.frame_id = self._params["world_frame"]
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = \
            (float(v) for v in obs.eef_pos)
        q = pose.pose.orientation
        q.x, q.y, q.z, q.w = (float(v) for v in obs.eef_quat_xyzw)
        self.pose_pub.publish(pose)

    def _publish_applied(self, action, stamp_ns: int, info: dict) -> None:
        msg = JointState()
        msg.header.stamp = ns_to_stamp(stamp_ns)
        msg.header.frame_id = json.dumps(info, separators=(",", ":"))
        msg.name = ACTION_NAMES
        msg.position = [float(v) for v in action]
        self.applied_pub.publish(msg)

    def _publish_request(self, episode: _Episode) -> int:
        header = Header(stamp=ns_to_stamp(self._sim_ns), frame_id=str(episode.task.task_uid))
        self.request_pub.publish(header)
        return self._sim_ns

    def _publish_episode(self, episode: _Episode, event: int, success=False, reason="start"):
        spec, task = episode.spec, episode.task
        msg = Episode(event=event, run_id=self.run_id, episode_index=episode.index,
                      suite=spec.suite, task_index=spec.task_index, task_uid=task.task_uid,
                      task_name=task.name, language_instruction=task.language,
                      init_state_index=spec.init_state_index, seed=spec.seed,
                      step=episode.step, max_steps=spec.max_steps,
                      chunks_executed=episode.chunks_executed, success=bool(success),
                      reason=reason)
        msg.header.stamp = ns_to_stamp(self._sim_ns)
        self.episode_pub.publish(msg)
        name = {Episode.START: "START", Episode.END: "END", Episode.ABORT: "ABORT"}[event]
        self.get_logger().info(
            f"episode {episode.index} {name} {spec.suite}[{spec.task_index}] init "
            f"{spec.init_state_index} step {episode.step}/{spec.max_steps} chunks "
            f"{episode.chunks_executed} success {bool(success)} reason {reason}")

    # ------------------------------------------------------------------ stepping
    def _pending(self):
        """The command that aborts the running episode, if any (called between steps)."""
        command = self._command
        if command in ("reset", "next_episode", "stop"):
            raise _Abort("shutdown" if command == "stop" else command)

    def step_once(self, action, render: bool, info: dict):
        """Apply one action for one control step, advance sim time, publish the observation.
        Returns (obs, success)."""
        start_ns = self._sim_ns
        action = np.asarray(action, dtype=np.float64)
        obs, success = self._env.step(action, render=render)
        self._sim_ns += PERIOD_NS
        self._publish_applied(action, start_ns, info)
        self._publish_observation(obs, self._sim_ns)
        return obs, success

    def _hold_action(self, episode: _Episode) -> np.ndarray:
        return np.array([0.0] * 6 + [episode.gripper])

    def _control_step(self, episode: _Episode, action, render: bool, info: dict) -> None:
        """One counted control step; sets episode.outcome at success / timeout."""
        if not np.all(np.isfinite(action)):          # never reached: chunks are validated
            raise AssertionError("non-finite action")
        episode.gripper = float(action[6])
        for seq in info.get("seq") or []:
            episode.used_seqs.add(seq)
        _obs, success = self.step_once(action, render, info)
        episode.step += 1
        if success:
            episode.outcome = (Episode.END, True, "success")
        elif episode.step >= episode.spec.max_steps:
            episode.outcome = (Episode.END, False, "timeout")
        elif episode.step == episode.cfg["force_success_at_step"]:
            self._force = True

    def _forced_success(self, episode: _Episode) -> None:
        with self._cv:
            self._force = False
        self.get_logger().info(f"episode {episode.index}: forcing success")
        self._env.force_success_state()
        if self._env.check_success():       # open / close / turnon / turnoff: at once
            episode.outcome = (Episode.END, True, "success")
            return
        for _ in range(FORCE_SUCCESS_MAX_STEPS):   # in / on: need contact, let objects drop
            self._control_step(episode, self._hold_action(episode), False, {"src": "forced"})
            if episode.outcome:
                return
            self._pending()
        self.get_logger().warning("force_success: success check still false after "
                                  f"{FORCE_SUCCESS_MAX_STEPS} steps; continuing")

    def _render_for(self, remaining: int, history: int) -> bool:
        return bool(self.cameras) and remaining <= history

    # ------------------------------------------------------------------ episode
    def _run_episode(self, spec: EpisodeSpec) -> None:
        cfg = dict(self._params)
        task = self._env.load(spec.suite, spec.task_index)
        self._env.reset(spec.init_state_index, spec.seed)
        if self.lockstep:
            self._wait_for_policy(cfg)
        command = self._command
        if command is not None:            # reset / next / stop arrived while loading
            self.last_outcome = (None, False, "shutdown" if command == "stop" else command)
            return
        with self._cv:
            self._inbox.clear()
            self._force = False
            episode = _Episode(spec, self._episode_index, task, self._sim_ns, cfg)
            self._episode_index += 1
            self._queue = None if self.lockstep else ChunkQueue(
                merge=cfg["merge_rule"], late_policy=cfg["late_policy"],
                hold_grace_s=cfg["hold_grace_s"], ensemble_m=cfg["ensemble_m"])
            self._episode = episode
        self._publish_episode(episode, Episode.START)
        try:
            history = cfg["obs_history_steps"]
            settle = cfg["settle_steps"]
            for k in range(settle):
                self.step_once(SETTLE_ACTION, self._render_for(settle - k, history),
                               {"src": "settle"})
                self._pending()
            if settle == 0:
                self._publish_observation(self._env.observe(render=bool(self.cameras)),
                                          self._sim_ns)
            if self.lockstep:
                self._lockstep_loop(episode)
            else:
                self._realtime_loop(episode)
            event, success, reason = episode.outcome
        except _Abort as abort:
            event, success, reason = Episode.ABORT, False, abort.reason
        except Exception:
            episode.outcome = (Episode.ABORT, False, "error")
            self.last_outcome = episode.outcome
            self._publish_episode(episode, Episode.ABORT, False, "error")
            raise
        finally:
            with self._cv:
                self._episode = None
                self._queue = None
        episode.chunks_executed = max(episode.chunks_executed, len(episode.used_seqs))
        self._publish_episode(episode, event, success, reason)
        episode.outcome = (event, success, reason)
        self.last_outcome = episode.outcome

    def _wait_for_policy(self, cfg: dict) -> None:
        deadline = time.monotonic() + cfg["wait_for_policy_s"]
        chunk_topic = self.resolve_topic_name(cfg["action_chunk_topic"])
        while (self.request_pub.get_subscription_count() == 0
               or self.count_publishers(chunk_topic) == 0) and time.monotonic() < deadline:
            with self._cv:
                if self._command is not None:
                    return
                self._cv.wait(0.1)

    def _wait_for_chunk(self, episode: _Episode, request_ns: int):
        """lockstep: ('chunk', Chunk) | ('rejected', reason) | ('force', None)."""
        start = time.monotonic()
        with self._cv:
            while True:
                self._pending()
                if self._force:
                    return "force", None
                while self._inbox:
                    stamp_ns, chunk, reason, seq = self._inbox.popleft()
                    if abs(stamp_ns - request_ns) < STAMP_TOLERANCE_NS:
                        if chunk is None:
                            self._reject(seq, stamp_ns, reason)
                            return "rejected", reason
                        return "chunk", chunk
                    self._reject(seq, stamp_ns, reason or
                                 f"stamp does not match the pending request "
                                 f"{request_ns * 1e-9:.3f}")
                remaining = start + self._params["chunk_timeout_s"] - time.monotonic()
                if remaining <= 0:
                    raise _Abort("policy_timeout")
                self._cv.wait(min(remaining, 1.0))

    def _lockstep_loop(self, episode: _Episode) -> None:
        history = episode.cfg["obs_history_steps"]
        while episode.outcome is None:
            if self._force:
                self._forced_success(episode)
                continue
            request_ns = self._publish_request(episode)
            kind, value = self._wait_for_chunk(episode, request_ns)
            if kind == "force":
                continue
            if kind == "rejected":
                self._control_step(episode, self._hold_action(episode),
                                   self._render_for(1, history), {"src": "hold"})
                self._pending()
                continue
            actions = lockstep_actions(value)
            episode.chunks_executed += 1
            for k, action in enumerate(actions):
                self._control_step(episode, action, self._render_for(len(actions) - k, history),
                                   {"src": "lockstep", "seq": [value.seq], "i": [k]})
                if episode.outcome or self._force:
                    break
                self._pending()

    def _realtime_loop(self, episode: _Episode) -> None:
        cfg = episode.cfg
        history = cfg["obs_history_steps"]
        group = max(history, int(round(1.0 / (cfg["camera_rate_hz"] * CONTROL_PERIOD_S))))
        self._publish_request(episode)
        self._last_chunk_wall = time.monotonic()
        if cfg["realtime_wait_first_chunk"]:
            with self._cv:
                while not len(self._queue) and not self._force:
                    self._pending()
                    if time.monotonic() - self._last_chunk_wall > self._params["chunk_timeout_s"]:
                        raise _Abort("policy_timeout")
                    self._cv.wait(0.5)
        next_tick = time.monotonic()
        while episode.outcome is None:
            if self._force:
                self._forced_success(episode)
                continue
            with self._cv:
                action, qinfo = self._queue.next_action(self._sim_ns * 1e-9)
            if action is None:
                action, info = self._hold_action(episode), {"src": "hold"}
            else:
                info = {"src": qinfo["source"], "seq": qinfo["seqs"], "i": qinfo["steps"],
                        "w": [round(w, 6) for w in qinfo["weights"]]}
            phase = (episode.step + 1) % group
            self._control_step(episode, action, self._render_for(
                (group - phase) % group + 1, history), info)
            if episode.outcome:
                break
            if phase == 0:
                self._publish_request(episode)
            if time.monotonic() - self._last_chunk_wall > self._params["chunk_timeout_s"]:
                raise _Abort("policy_timeout")
            self._pending()
            next_tick += CONTROL_PERIOD_S
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -CONTROL_PERIOD_S:
                next_tick = time.monotonic()      # fell behind: no catch-up burst
        episode.chunks_executed = len(episode.used_seqs)

    # ------------------------------------------------------------------ sim thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._sim_main, name="sim", daemon=True)
        self._thread.start()

    def _take_command(self):
        with self._cv:
            command, self._command = self._command, None
            return command

    def _sim_main(self) -> None:
        try:
            if self._env is None:
                from sim_bridge.libero_env import LiberoEnv
                self._env = LiberoEnv(cameras=self.cameras, image_size=self._params["image_size"],
                                      flip_vertical=self._params["flip_vertical"])
            plan = build_plan(self._params)
            pos = 0 if self._params["autostart"] else len(plan)
            idle = not self._params["autostart"]
            while True:
                command = self._take_command()
                if command == "stop":
                    break
                if command == "reset":
                    plan, pos, idle = build_plan(self._params), 0, False
                elif command == "next_episode":
                    pos, idle = pos + 1 if not idle else pos, False
                    if pos >= len(plan):
                        plan.append(successor(plan[-1]))
                        pos = len(plan) - 1
                if pos < len(plan) and not idle:
                    self._run_episode(plan[pos])
                    if self.last_outcome[2] not in ("reset", "next_episode", "shutdown"):
                        pos += 1
                    if self.last_outcome[2] == "shutdown":
                        break
                    continue
                idle = True
                if self._params["exit_when_done"]:
                    self.get_logger().info(f"plan done ({len(plan)} episodes): exiting")
                    break
                with self._cv:
                    while self._command is None:
                        self._cv.wait(1.0)
        except Exception as err:  # noqa: BLE001 - report, abort the episode, exit non-zero
            self.get_logger().error(f"sim thread failed: {err}\n{traceback.format_exc()}")
            self.exit_code = 1
        finally:
            self.finished.set()

    def close(self, timeout: float = 20.0) -> None:
        """Stop the sim thread (ABORT "shutdown" if an episode runs) and close the env."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._env is not None and not (self._thread and self._thread.is_alive()):
            self._env.close()


def main(args=None) -> int:
    """Run the bridge until its plan is done (exit_when_done) or SIGINT / SIGTERM, which abort
    the running episode (Episode ABORT "shutdown") before the node shuts down. Returns the exit
    code: 0 ok, 1 the simulation failed, 2 bad parameters."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = SimBridge()
    except ValueError as err:
        print(err, flush=True)
        rclpy.try_shutdown()
        return 2
    if threading.current_thread() is threading.main_thread():   # not when embedded in a thread
        signal.signal(signal.SIGINT, lambda *_: node.request_stop())
        signal.signal(signal.SIGTERM, lambda *_: node.request_stop())
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    node.start()
    try:
        while not node.finished.is_set():
            executor.spin_once(timeout_sec=0.1)
        end = time.monotonic() + 0.5           # let the last reliable messages go out
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return node.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
