"""policy_node: cameras + joint states (+ end-effector pose) in, oat_ros_interfaces/ActionChunk out.

A lifecycle node (rclpy.lifecycle):
  configure  -> load the checkpoint(s), build the engine, warm it up (failure: stays unconfigured)
  activate   -> start making chunks (per request, or at a fixed rate)
  deactivate -> stop making chunks, keep the model;  cleanup -> free the model
With `auto_start` (default) it configures and activates itself.

Threads: subscriptions and services run in the ROS executor; inference runs in one worker
thread that always takes the NEWEST pending job (older pending jobs are superseded and
counted), so sensor callbacks never wait for a chunk and no queue builds up.
Every parameter and topic is described in README.md ("policy_node").
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Header

from oat_ros_interfaces.msg import ActionChunk, Episode

from oat_ros.engine.settings import DecodeSettings
from oat_ros.errors import OatRosError
from oat_ros.observation_buffer import ObservationBuffer
from oat_ros.paths import DEFAULT_POLICY_DIR
from oat_ros.ros import params as P
from oat_ros.ros.image_conversion import compressed_to_rgb, fit_to, image_to_rgb
from oat_ros.ros.messages import float32_sequence, ns_to_stamp, stamp_to_ns

PANDA_JOINTS = [f"robot0_joint{i}" for i in range(1, 8)]


def _positive_list(v):
    return None if v and all(isinstance(x, str) and x for x in v) else "expected a non-empty list of names"


PARAMS = [
    P.Param("auto_start", True, "Configure and activate on start."),
    P.Param("policy_path", "", "Policy checkpoint: a native export directory or an original OAT .ckpt. "
            "Empty = the embedded default policy."),
    P.Param("tail_path", "", "Blockwise-OAT tail (.pt); empty = none (or the one inside a native export)."),
    P.Param("allow_unsafe_pickle", False, "Allow arbitrary pickle code in original .ckpt files "
            "(default: only the allow-listed types these payloads hold)."),
    P.Param("device", "cpu", "Torch device: cpu, cuda or cuda:N.",
            check=lambda v: None if v == "cpu" or v.startswith("cuda") else "expected cpu, cuda or cuda:N"),
    P.Param("cpu_threads", 1, "torch intra-op threads on CPU (1 is fastest for batch 1 on small machines).",
            min=1, max=256),
    P.Param("compile_step", False, "CPU: torch.compile the decoding step (faster tokens, 10-30 s more "
            "at configure)."),
    P.Param("warmup", True, "Run every decode shape once at configure so the first chunk is not slow."),
    P.Param("decode_mode", "ar", "Decoding: ar (K tokens autoregressively) or blockwise (P tokens + tail).",
            runtime=True, choices=("ar", "blockwise")),
    P.Param("max_tokens", 8, "K: tokens decoded in ar mode; the rest are MASK (coarser chunk).",
            runtime=True, min=1, max=8),
    P.Param("prefix_len", 4, "P: autoregressive prefix in blockwise mode (must match the tail).",
            runtime=True, min=1, max=8),
    P.Param("refine_iters", 1, "r: tail refinement passes in blockwise mode.", runtime=True, min=1, max=8),
    P.Param("deadline_ms", 0.0, "Anytime budget per chunk in ms; 0 = no deadline (always max tokens).",
            runtime=True, min=0.0, max=60000.0),
    P.Param("deadline_reference", "capture", "Deadline measured from the observation's capture stamp or "
            "from the request/timer tick.", runtime=True, choices=("capture", "request")),
    P.Param("temperature", 0.0, "Sampling temperature; 0 = greedy.", runtime=True, min=0.0, max=10.0),
    P.Param("top_k", 0, "Top-k filter when sampling; 0 = off.", runtime=True, min=0, max=1000),
    P.Param("seed", -1, "-1 = unseeded; otherwise chunk n samples with seed + n (reproducible).",
            runtime=True, min=-1, max=2**31 - 1),
    P.Param("trigger", "request", "request: one chunk per message on request_topic; rate: chunks at rate_hz "
            "from the newest observation.", choices=("request", "rate")),
    P.Param("rate_hz", 2.0, "Chunk rate when trigger = rate.", runtime=True, min=0.01, max=1000.0),
    P.Param("task_from_episode", True, "Take the task id from each Episode START message (evaluation "
            "plans over several tasks); task_uid is used until the first START.", runtime=True),
    P.Param("task_uid", 10, "Task id the policy is conditioned on (LIBERO global uid).", runtime=True,
            min=0, max=100000),
    P.Param("max_skew_ms", 20.0, "Max stamp difference between the parts of one observation.",
            runtime=True, min=0.0, max=10000.0),
    P.Param("max_age_ms", 0.0, "Max age of the newest observation when a chunk starts; 0 = no check.",
            runtime=True, min=0.0, max=600000.0),
    P.Param("request_timeout_ms", 2000.0, "Drop a request whose observation has not arrived after this.",
            runtime=True, min=1.0, max=600000.0),
    P.Param("on_out_of_bounds", "clip", "Actions outside the checkpoint's bounds: clip (and flag "
            "`clipped`) or drop the chunk.", runtime=True, choices=("clip", "drop")),
    P.Param("flip_vertical", False, "Flip camera images vertically before the policy (if the cameras "
            "publish upside down relative to the training data).", runtime=True),
    P.Param("camera_topics", ["/camera/agentview/image_raw", "/camera/eye_in_hand/image_raw"],
            "Camera topics, one per policy camera key (a topic ending in /compressed is a CompressedImage).",
            check=_positive_list),
    P.Param("camera_keys", ["agentview_rgb", "robot0_eye_in_hand_rgb"],
            "The policy camera key each camera topic feeds (same order).", check=_positive_list),
    P.Param("joint_states_topic", "/joint_states", "sensor_msgs/JointState topic."),
    P.Param("joint_names", PANDA_JOINTS, "Arm joints, in order, for a *joint_pos state key.", check=_positive_list),
    P.Param("gripper_joints", ["robot0_finger_joint1", "robot0_finger_joint2"],
            "Joints whose positions form a *gripper_qpos state key.", check=_positive_list),
    P.Param("eef_pose_topic", "/eef_pose", "geometry_msgs/PoseStamped for *eef_pos / *eef_quat (xyzw) keys."),
    P.Param("request_topic", "/oat/chunk_request", "std_msgs/Header: stamp = capture time of the "
            "observation a chunk is wanted for."),
    P.Param("chunk_topic", "/oat/action_chunk", "Output oat_ros_interfaces/ActionChunk topic."),
    P.Param("episode_topic", "/oat/episode", "oat_ros_interfaces/Episode: START clears the observation history."),
    P.Param("frame_id", "", "frame_id of published chunks (empty = the newest camera frame's frame_id)."),
    P.Param("diagnostics_period_s", 1.0, "Diagnostics publication period.", min=0.05, max=3600.0),
]
PARAM_TABLE = {p.name: p for p in PARAMS}
RUNTIME_DECODE = ("decode_mode", "max_tokens", "prefix_len", "refine_iters", "deadline_ms",
                  "deadline_reference", "temperature", "top_k", "seed")


@dataclass
class Job:
    frames: list                    # observation frames, oldest first
    capture_ns: int                 # newest frame's capture stamp
    frame_id: str
    t_trigger: float                # perf_counter at the request / tick
    request_ns: int | None
    t_ready: float = 0.0            # perf_counter when both the trigger and its observation were there


def _state_extractors(state_keys: dict, joint_names, gripper_joints):
    """Map each policy state key to (source, function(sample) -> np.ndarray [dim])."""
    out = {}
    for key, dim in state_keys.items():
        if key.endswith("eef_pos"):
            out[key] = ("pose", lambda s: s[0])
        elif key.endswith("eef_quat"):
            out[key] = ("pose", lambda s: s[1])
        elif key.endswith("gripper_qpos"):
            out[key] = ("joints", lambda s, n=tuple(gripper_joints): np.array([s[j] for j in n], np.float32))
        elif key.endswith("joint_pos"):
            out[key] = ("joints", lambda s, n=tuple(joint_names): np.array([s[j] for j in n], np.float32))
        elif key == "task_uid":
            out[key] = ("param", None)
        else:
            raise OatRosError(f"policy state key '{key}' has no ROS source: supported keys end in eef_pos, "
                              "eef_quat (pose topic), gripper_qpos, joint_pos (joint states) or are task_uid")
    return out


class PolicyNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("policy_node", **kwargs)
        P.declare(self, PARAMS)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self._active = False
        self._engine = None
        self._settings = None
        self._subs, self._timers = [], []
        self._pub = self._diag_pub = None
        self._lock = threading.Lock()          # guards the job slot and the buffer
        self._job_ready = threading.Condition(self._lock)
        self._job: Job | None = None
        self._pending_requests: deque = deque(maxlen=8)
        self._worker = None
        self._stop = threading.Event()
        self._seq = 0
        self._episode_task_uid = None
        self._stats = self._new_stats()
        self._last_warn = {}
        if self.get_parameter("auto_start").value:
            self._auto_timer = self.create_timer(0.0, self._auto_start)

    # --- lifecycle ----------------------------------------------------------------------

    def _auto_start(self):
        self.destroy_timer(self._auto_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as e:  # a bad checkpoint / config must leave the node unconfigured
            self.get_logger().error(f"configure failed: {e}")
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _configure(self):
        import torch

        from oat_ros.checkpoint import load_policy
        from oat_ros.engine.engine import Engine

        p = P.values(self, PARAMS)
        for spec in PARAMS:  # values given at start-up never went through _on_set_parameters
            why = spec.validate(p[spec.name])
            if why:
                raise OatRosError(f"parameter {why}")
        torch.set_num_threads(int(p["cpu_threads"]))
        policy_path = p["policy_path"] or str(DEFAULT_POLICY_DIR)
        if not p["policy_path"] and not (DEFAULT_POLICY_DIR / "config.yaml").exists():
            raise OatRosError(f"no policy: parameter 'policy_path' is empty and the embedded default policy "
                              f"({DEFAULT_POLICY_DIR}) is not present")
        t0 = time.perf_counter()
        policy = load_policy(policy_path, p["tail_path"] or None, allow_unsafe_pickle=p["allow_unsafe_pickle"])
        cfg = policy.cfg
        cams, keys = list(p["camera_topics"]), list(p["camera_keys"])
        if len(cams) != len(keys):
            raise OatRosError(f"parameters 'camera_topics' ({len(cams)}) and 'camera_keys' ({len(keys)}) "
                              "must have the same length")
        if sorted(keys) != sorted(cfg.cameras):
            raise OatRosError(f"parameter 'camera_keys' {keys} does not match the policy's cameras "
                              f"{list(cfg.cameras)} ({policy_path})")
        self._extractors = _state_extractors(cfg.states, p["joint_names"], p["gripper_joints"])
        self._needed_joints = ([*p["gripper_joints"]] if any(k.endswith("gripper_qpos") for k in cfg.states) else []) \
            + ([*p["joint_names"]] if any(k.endswith("joint_pos") for k in cfg.states) else [])
        self._engine = Engine(policy, device=p["device"], compile_step=p["compile_step"])
        self._settings = self._settings_from(p)
        if p["warmup"]:
            info = self._engine.warmup()
            self.get_logger().info(f"warm-up {info['seconds']:.1f} s")
        self._policy_id = f"{policy_path.rstrip('/').split('/')[-1]}"
        self._cfg = cfg
        self._cam_topics = dict(zip(keys, cams))
        sources = keys + sorted({src for src, _ in self._extractors.values() if src != "param"})
        self._buffer = ObservationBuffer(sources, cfg.n_obs_steps, int(p["max_skew_ms"] * 1e6))
        self._create_interfaces(p)
        self.get_logger().info(
            f"configured in {time.perf_counter() - t0:.1f} s: {policy_path} on {p['device']} "
            f"(cameras {keys}, states {list(cfg.states)}, horizon {cfg.horizon}, "
            f"n_action_steps {cfg.n_action_steps}, tail {'yes' if self._engine.has_tail else 'no'})")

    def _create_interfaces(self, p):
        # One mutually exclusive group per sensor topic: messages of one topic are handled in
        # arrival order (a reentrant group let two frames of one camera race, and the older one
        # landing last looked like time going backwards), different topics still in parallel.
        sensors = ReentrantCallbackGroup()
        ordered = MutuallyExclusiveCallbackGroup
        self._trigger_group = MutuallyExclusiveCallbackGroup()
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        # Chunks: reliable, a few deep (an executor must not miss one); lifecycle-gated.
        self._pub = self.create_lifecycle_publisher(ActionChunk, p["chunk_topic"], reliable)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Sensors: keep only the newest few; a late frame is useless.
        sensor_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        for key, topic in self._cam_topics.items():
            if topic.endswith("/compressed"):
                cb = lambda msg, k=key, t=topic: self._on_image(k, t, msg, compressed=True)
                self._subs.append(self.create_subscription(CompressedImage, topic, cb, sensor_qos,
                                                           callback_group=ordered()))
            else:
                cb = lambda msg, k=key, t=topic: self._on_image(k, t, msg, compressed=False)
                self._subs.append(self.create_subscription(Image, topic, cb, sensor_qos, callback_group=ordered()))
        needs = {src for src, _ in self._extractors.values()}
        if "joints" in needs:
            self._subs.append(self.create_subscription(JointState, p["joint_states_topic"], self._on_joints,
                                                       sensor_qos, callback_group=ordered()))
        if "pose" in needs:
            self._subs.append(self.create_subscription(PoseStamped, p["eef_pose_topic"], self._on_pose,
                                                       sensor_qos, callback_group=ordered()))
        self._subs.append(self.create_subscription(Episode, p["episode_topic"], self._on_episode, reliable,
                                                   callback_group=ordered()))
        self._subs.append(self.create_subscription(Header, p["request_topic"], self._on_request, reliable,
                                                   callback_group=self._trigger_group))
        self._timers.append(self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics,
                                              callback_group=sensors))

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="oat_inference", daemon=True)
        self._worker.start()
        self._active = True
        self._start_rate_timer()
        self.get_logger().info(f"active: trigger={self.get_parameter('trigger').value}, "
                               f"decode {self._settings}")
        return super().on_activate(state)

    def _start_rate_timer(self):
        if self.get_parameter("trigger").value == "rate":
            self._rate_timer = self.create_timer(1.0 / self.get_parameter("rate_hz").value, self._on_tick,
                                                 callback_group=self._trigger_group)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._active = False
        if getattr(self, "_rate_timer", None) is not None:
            self.destroy_timer(self._rate_timer)
            self._rate_timer = None
        self._stop_worker()
        with self._lock:
            self._job = None
            self._pending_requests.clear()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._active = False
        self._stop_worker()
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self):
        self._stop.set()
        with self._lock:
            self._job_ready.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=10)
            self._worker = None

    def _teardown(self):
        for sub in self._subs:
            self.destroy_subscription(sub)
        for timer in self._timers:
            self.destroy_timer(timer)
        if self._pub is not None:
            getattr(self, "destroy_lifecycle_publisher", self.destroy_publisher)(self._pub)
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
        self._subs, self._timers, self._pub, self._diag_pub = [], [], None, None
        self._engine = None

    # --- parameters ---------------------------------------------------------------------

    @staticmethod
    def _settings_from(p: dict) -> DecodeSettings:
        return DecodeSettings(mode=p["decode_mode"], max_tokens=p["max_tokens"], prefix_len=p["prefix_len"],
                              refine_iters=p["refine_iters"], deadline_ms=p["deadline_ms"],
                              deadline_reference=p["deadline_reference"], temperature=p["temperature"],
                              top_k=p["top_k"], seed=p["seed"])

    def _on_set_parameters(self, params):
        result = P.check_changes(PARAM_TABLE, params, self._active)
        if not result.successful:
            self.get_logger().warning(f"parameter change refused: {result.reason}")
            return result
        changed = {p.name: p.value for p in params}
        if any(k in changed for k in RUNTIME_DECODE):
            current = P.values(self, PARAMS)
            current.update(changed)
            try:
                self._settings_from(current)
            except OatRosError as e:
                result.successful, result.reason = False, str(e)
        return result

    def _after_set_parameters(self, params):
        names = {p.name for p in params}
        if self._engine is not None and names & set(RUNTIME_DECODE):
            self._settings = self._settings_from(P.values(self, PARAMS))  # atomic swap between chunks
            self.get_logger().info(f"decode settings now {self._settings}")
        if "max_skew_ms" in names and self._engine is not None:
            self._buffer.max_skew_ns = int(self.get_parameter("max_skew_ms").value * 1e6)
        if "rate_hz" in names and self._active and getattr(self, "_rate_timer", None) is not None:
            self.destroy_timer(self._rate_timer)
            self._start_rate_timer()

    # --- inputs -------------------------------------------------------------------------

    def _warn(self, key: str, text: str, period_s: float = 2.0):
        now = time.monotonic()
        if now - self._last_warn.get(key, -1e9) >= period_s:
            self._last_warn[key] = now
            self.get_logger().warning(text)

    def _on_image(self, key, topic, msg, compressed: bool):
        if self._engine is None:
            return
        try:
            rgb = compressed_to_rgb(msg, topic) if compressed else image_to_rgb(msg, topic)
            h, w, _ = self._cfg.cameras[key]
            rgb = fit_to(rgb, (h, w), self.get_parameter("flip_vertical").value)
        except OatRosError as e:
            self._stats["rejected_messages"] += 1
            self._warn(f"img:{topic}", f"rejected image on {topic}: {e}")
            return
        stamp = stamp_to_ns(msg.header.stamp)
        with self._lock:
            self._buffer.add(key, stamp, (rgb, msg.header.frame_id))
        self._retry_pending()

    def _on_joints(self, msg: JointState):
        if self._engine is None:
            return
        if len(msg.position) != len(msg.name):
            self._stats["rejected_messages"] += 1
            self._warn("joints", f"rejected JointState: {len(msg.name)} names but {len(msg.position)} positions")
            return
        positions = dict(zip(msg.name, msg.position))
        missing = [j for j in self._needed_joints if j not in positions]
        if missing:
            self._stats["rejected_messages"] += 1
            self._warn("joints", f"rejected JointState on {self.get_parameter('joint_states_topic').value}: "
                                 f"missing joints {missing}")
            return
        with self._lock:
            self._buffer.add("joints", stamp_to_ns(msg.header.stamp), positions)
        self._retry_pending()

    def _on_pose(self, msg: PoseStamped):
        if self._engine is None:
            return
        p, q = msg.pose.position, msg.pose.orientation
        value = (np.array([p.x, p.y, p.z], np.float32), np.array([q.x, q.y, q.z, q.w], np.float32))
        if not (np.isfinite(value[0]).all() and np.isfinite(value[1]).all()):
            self._stats["rejected_messages"] += 1
            self._warn("pose", f"rejected PoseStamped on {self.get_parameter('eef_pose_topic').value}: NaN/inf")
            return
        with self._lock:
            self._buffer.add("pose", stamp_to_ns(msg.header.stamp), value)
        self._retry_pending()

    def _task_uid(self) -> int:
        if self.get_parameter("task_from_episode").value and self._episode_task_uid is not None:
            return self._episode_task_uid
        return self.get_parameter("task_uid").value

    def _on_episode(self, msg):
        if msg.event == msg.START:
            self._episode_task_uid = int(msg.task_uid)
        if msg.event == msg.START and self._engine is not None:
            with self._lock:
                self._buffer.clear()
                self._pending_requests.clear()

    # --- triggering ---------------------------------------------------------------------

    def _on_request(self, msg: Header):
        if not self._active or self.get_parameter("trigger").value != "request":
            return
        with self._lock:
            self._pending_requests.append((stamp_to_ns(msg.stamp), time.perf_counter()))
        self._retry_pending()

    def _retry_pending(self):
        """Serve pending requests whose observation is complete; expire the hopeless ones."""
        if not self._pending_requests:
            return
        timeout = self.get_parameter("request_timeout_ms").value / 1e3
        with self._lock:
            keep = deque(maxlen=self._pending_requests.maxlen)
            while self._pending_requests:
                stamp, t_req = self._pending_requests.popleft()
                frames, why = self._buffer.observation(stamp)
                if frames is not None:
                    self._submit_locked(frames, t_req, stamp)
                elif time.perf_counter() - t_req > timeout:
                    self._stats["dropped_incomplete"] += 1
                    self._warn("req", f"dropped chunk request for {stamp / 1e9:.3f} s: {why}")
                else:
                    keep.append((stamp, t_req))
            self._pending_requests = keep

    def _on_tick(self):
        if not self._active:
            return
        with self._lock:
            frames, why = self._buffer.observation(None)
            if frames is None:
                self._stats["dropped_incomplete"] += 1
                self._warn("tick", f"no chunk: incomplete observation ({why})")
                return
            self._submit_locked(frames, time.perf_counter(), None)

    def _submit_locked(self, frames, t_trigger, request_ns):
        newest = frames[-1]
        capture_ns = newest.stamp_ns
        max_age = self.get_parameter("max_age_ms").value
        if max_age > 0:
            age_ms = (self.get_clock().now().nanoseconds - capture_ns) / 1e6
            if age_ms > max_age:
                self._stats["dropped_stale"] += 1
                self._warn("stale", f"no chunk: newest observation is {age_ms:.0f} ms old "
                                    f"(max_age_ms {max_age:.0f})")
                return
        if self._job is not None:
            self._stats["superseded"] += 1
        cam0 = self._buffer.anchor
        self._job = Job(frames, capture_ns, newest.values[cam0][1], t_trigger, request_ns, time.perf_counter())
        self._job_ready.notify()

    # --- inference worker ---------------------------------------------------------------

    def _work(self):
        while not self._stop.is_set():
            with self._lock:
                while self._job is None and not self._stop.is_set():
                    self._job_ready.wait(timeout=0.5)
                job, self._job = self._job, None
            if job is None:
                continue
            try:
                self._make_chunk(job)
            except Exception as e:  # never kill the worker: report and go on
                if not self.context.ok():
                    break  # shutting down (SIGINT/SIGTERM): the chunk cannot be published any more
                self._stats["errors"] += 1
                self.get_logger().error(f"chunk failed: {type(e).__name__}: {e}")

    def _observation(self, frames):
        from oat_ros.engine.engine import Observation
        cfg = self._cfg
        task_uid = float(self._task_uid())
        images = {k: np.stack([f.values[k][0] for f in frames])[None] for k in cfg.cameras}
        states = {}
        for key, (src, fn) in self._extractors.items():
            if src == "param":
                states[key] = np.full((1, len(frames), 1), task_uid, np.float32)
            else:
                states[key] = np.stack([fn(f.values[src]) for f in frames]).astype(np.float32)[None]
        ids = [[(f.key, task_uid) for f in frames]]   # same key => same frame content
        return Observation(images, states, ids)

    def _make_chunk(self, job: Job):
        settings = self._settings
        seq = self._seq
        if settings.seed >= 0:
            settings = settings.with_(seed=settings.seed + seq)
        if settings.deadline_reference == "capture":
            elapsed = max(0.0, (self.get_clock().now().nanoseconds - job.capture_ns) / 1e9)
        else:
            elapsed = time.perf_counter() - job.t_trigger
        t_call = time.perf_counter()
        result = self._engine.predict(self._observation(job.frames), settings, elapsed_s=elapsed)
        actions = result.actions[0]
        if not np.isfinite(actions).all():
            self._stats["dropped_nonfinite"] += 1
            self._warn("nan", "dropped a chunk with NaN/inf actions")
            return
        clipped = bool(((actions < self._engine.action_low) | (actions > self._engine.action_high)).any())
        if clipped:
            if self.get_parameter("on_out_of_bounds").value == "drop":
                self._stats["dropped_out_of_bounds"] += 1
                self._warn("oob", "dropped a chunk outside the action bounds (on_out_of_bounds = drop)")
                return
            actions = np.clip(actions, self._engine.action_low, self._engine.action_high)
            self._stats["clipped"] += 1
        t_pub = time.perf_counter()
        msg = ActionChunk()
        msg.header.stamp = ns_to_stamp(job.capture_ns)
        msg.header.frame_id = self.get_parameter("frame_id").value or job.frame_id
        msg.seq = seq
        msg.policy_id = self._policy_id
        msg.task_uid = int(self._task_uid())
        msg.horizon, msg.action_dim = actions.shape
        msg.n_action_steps = self._cfg.n_action_steps
        msg.control_period_s = 0.05
        msg.actions = float32_sequence(actions)
        msg.decode_mode = result.mode
        msg.tokens_generated = result.tokens_generated
        msg.tokens_max = result.tokens_requested
        msg.prefix_len = settings.prefix_len if result.mode == "blockwise" else 0
        msg.refine_iters = settings.refine_iters if result.used_tail else 0
        msg.temperature = float(settings.temperature)
        msg.top_k = settings.top_k
        msg.seed = settings.seed
        msg.deadline_ms = float(settings.deadline_ms)
        msg.deadline_reference = 0 if settings.deadline_reference == "capture" else 1
        msg.truncated = result.truncated
        msg.latency_ms = float(result.total_ms)
        msg.encode_ms, msg.decode_ms, msg.detokenize_ms = result.encode_ms, result.decode_ms, result.detokenize_ms
        msg.clipped = clipped
        now_ns = self.get_clock().now().nanoseconds
        msg.observation_age_ms = (now_ns - job.capture_ns) / 1e6
        # Honest: the budget counts everything up to the publish call, not just the engine.
        spent_ms = (elapsed + time.perf_counter() - t_call) * 1e3
        msg.deadline_met = settings.deadline_ms <= 0 or spent_ms <= settings.deadline_ms
        self._pub.publish(msg)
        self._engine.observe_publish_cost(1, time.perf_counter() - t_pub)
        self._seq += 1
        # node overhead counts from the moment the chunk could start (a request that came before
        # its images does not count the wait for them), so it is the node's own cost
        self._record(result, msg, (time.perf_counter() - job.t_ready) * 1e3)
        for note in result.notes:
            self._warn(f"note:{note}", note, 30.0)

    # --- diagnostics --------------------------------------------------------------------

    @staticmethod
    def _new_stats():
        return {"chunks": 0, "deadline_misses": 0, "dropped_incomplete": 0, "dropped_stale": 0,
                "superseded": 0, "dropped_nonfinite": 0, "dropped_out_of_bounds": 0, "clipped": 0,
                "rejected_messages": 0, "errors": 0, "latency_ms": deque(maxlen=500),
                "tokens": deque(maxlen=500), "node_overhead_ms": deque(maxlen=500)}

    def _record(self, result, msg, ready_to_publish_ms):
        s = self._stats
        s["chunks"] += 1
        s["deadline_misses"] += int(not msg.deadline_met)
        s["latency_ms"].append(result.total_ms)
        s["tokens"].append(result.tokens_generated)
        s["node_overhead_ms"].append(max(0.0, ready_to_publish_ms - result.total_ms))

    def _publish_diagnostics(self):
        if self._diag_pub is None:
            return
        self._retry_pending()  # expire requests even when no sensor message comes to do it
        s = self._stats
        lat = np.array(s["latency_ms"]) if s["latency_ms"] else np.zeros(1)
        tok = np.array(s["tokens"]) if s["tokens"] else np.zeros(1)
        over = np.array(s["node_overhead_ms"]) if s["node_overhead_ms"] else np.zeros(1)
        values = {
            "active": str(self._active), "decode": str(self._settings), "chunks": s["chunks"],
            "latency_p50_ms": np.percentile(lat, 50), "latency_p95_ms": np.percentile(lat, 95),
            "latency_p99_ms": np.percentile(lat, 99), "latency_max_ms": lat.max(),
            "tokens_per_chunk_mean": tok.mean(), "tokens_per_chunk_min": tok.min(),
            "node_overhead_p50_ms": np.percentile(over, 50), "node_overhead_p99_ms": np.percentile(over, 99),
            **{k: s[k] for k in ("deadline_misses", "dropped_incomplete", "dropped_stale", "superseded",
                                 "dropped_nonfinite", "dropped_out_of_bounds", "clipped", "rejected_messages",
                                 "errors")},
        }
        problems = s["deadline_misses"] + s["dropped_stale"] + s["dropped_incomplete"] + s["errors"]
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if problems == 0 else DiagnosticStatus.WARN,
            name=f"{self.get_fully_qualified_name().lstrip('/')}: OAT policy",  # unique per node instance
            hardware_id=self.get_parameter("device").value,
            message="ok" if problems == 0 else "deadline misses or dropped observations (see values)",
            values=[KeyValue(key=k, value=(f"{v:.3f}" if isinstance(v, float) else str(v))) for k, v in values.items()])
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status]
        self._diag_pub.publish(arr)


def main(args=None) -> int:
    rclpy.init(args=args if args is not None else sys.argv)
    node = PolicyNode()
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._active = False
        node._stop_worker()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
