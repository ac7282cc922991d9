"""The robot side of a policy_node test: synthetic cameras + joints + eef pose in, chunks out,
and the node's parameter / lifecycle services. Runs in its own process (a driver script).

    robot = FakeRobot(prefix="/t123")      # rclpy.init() first; spins in a background thread
    robot.wait_for_services(60); robot.wait_for_subscribers(60)
    t = robot.now_ns(); robot.publish_observation(t); robot.request(t)
    chunk = robot.wait_chunk(lambda c: stamp_ns(c) == t, timeout=10)
"""
from __future__ import annotations

import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import GetParameters, SetParameters, SetParametersAtomically
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header

from oat_ros_interfaces.msg import ActionChunk, Episode

CAMERA_TOPICS = ["/camera/agentview/image_raw", "/camera/eye_in_hand/image_raw"]
TOPIC_PARAMS = {"camera_topics": CAMERA_TOPICS, "joint_states_topic": "/joint_states",
                "eef_pose_topic": "/eef_pose", "request_topic": "/oat/chunk_request",
                "chunk_topic": "/oat/action_chunk", "episode_topic": "/oat/episode"}
ARM = [f"robot0_joint{i}" for i in range(1, 8)]
FINGERS = ["robot0_finger_joint1", "robot0_finger_joint2"]
TRANSITIONS = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP}


def node_args(prefix: str = "", **params) -> list[str]:
    """`-m oat_ros.ros.policy_node --ros-args ...` for a policy node living under `prefix`
    (namespace and every topic; several test runs may share a ROS domain on this machine)."""
    args = ["-m", "oat_ros.ros.policy_node", "--ros-args"]
    if prefix:
        args += ["-r", f"__ns:={prefix}"]
        params = {**{k: ([prefix + t for t in v] if isinstance(v, list) else prefix + v)
                     for k, v in TOPIC_PARAMS.items()}, **params}
    for name, value in params.items():
        args += ["-p", f"{name}:={_yaml(value)}"]
    return args


def _yaml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_yaml(v) for v in value) + "]"
    return str(value)


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _time(ns: int):
    from builtin_interfaces.msg import Time
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def picture(h=128, w=128, seed=0, gray=False) -> np.ndarray:
    """A smooth-ish synthetic RGB picture (uint8 [h, w, 3])."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 1 if gray else 3), dtype=np.uint8)
    img = np.repeat(np.repeat(small, 8, 0), 8, 1)
    return np.repeat(img, 3, 2) if gray else img


def image_msg(rgb: np.ndarray, encoding="rgb8", pad=0, stamp=0, frame_id="camera") -> Image:
    """sensor_msgs/Image of an RGB picture in `encoding` (rows padded with `pad` bytes)."""
    h, w = rgb.shape[:2]
    px = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1],
          "rgba8": np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], 2),
          "bgra8": np.concatenate([rgb[:, :, ::-1], np.full((h, w, 1), 255, np.uint8)], 2),
          "mono8": rgb[:, :, :1]}[encoding]
    rows = px.reshape(h, -1)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 0x5A, np.uint8)], 1)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=rows.shape[1])
    msg.header.stamp, msg.header.frame_id = _time(stamp), frame_id
    msg.data = np.ascontiguousarray(rows).tobytes()     # bytes: fast (a numpy array is slow)
    return msg


class FakeRobot:
    def __init__(self, prefix: str = "", node_name="policy_node", name="fake_robot"):
        self.node = Node(name)
        self.diag_name = f"{prefix}/{node_name}".lstrip("/") + ": OAT policy"
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.cams = [self.node.create_publisher(Image, prefix + t, reliable) for t in CAMERA_TOPICS]
        self.joints = self.node.create_publisher(JointState, prefix + "/joint_states", reliable)
        self.pose = self.node.create_publisher(PoseStamped, prefix + "/eef_pose", reliable)
        self.req = self.node.create_publisher(Header, prefix + "/oat/chunk_request", reliable)
        self.episode = self.node.create_publisher(Episode, prefix + "/oat/episode", reliable)
        self._lock = threading.Lock()
        self.chunks: list[tuple[float, ActionChunk]] = []      # (perf_counter at receipt, msg)
        self.diagnostics: list[dict] = []
        self.node.create_subscription(ActionChunk, prefix + "/oat/action_chunk", self._on_chunk, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        srv = f"{prefix}/{node_name}"
        self.set_cli = self.node.create_client(SetParameters, f"{srv}/set_parameters")
        self.set_atomic_cli = self.node.create_client(SetParametersAtomically, f"{srv}/set_parameters_atomically")
        self.get_cli = self.node.create_client(GetParameters, f"{srv}/get_parameters")
        self.change_cli = self.node.create_client(ChangeState, f"{srv}/change_state")
        self.state_cli = self.node.create_client(GetState, f"{srv}/get_state")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self._spin_loop, daemon=True)
        self._spin.start()
        self._last_stamp = 0
        self.default_pictures = [picture(seed=1), picture(seed=2)]

    def _spin_loop(self):
        try:
            self.executor.spin()
        except Exception:
            pass

    def close(self):
        self.executor.shutdown(timeout_sec=1.0)
        self._spin.join(timeout=2.0)
        self.node.destroy_node()

    # --- inputs -------------------------------------------------------------------------

    def now_ns(self) -> int:
        """Now, but always after every stamp published so far (a stamp going backwards would
        look like a simulation reset to the node and clear its observation history)."""
        return max(self.node.get_clock().now().nanoseconds, self._last_stamp + 1_000_000)

    def _on_chunk(self, msg):
        with self._lock:
            self.chunks.append((time.perf_counter(), msg))

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name == self.diag_name:
                with self._lock:
                    self.diagnostics.append({kv.key: kv.value for kv in st.values})

    def publish_observation(self, t_ns: int, pictures=None, encoding="rgb8", pad=0, joint_offset_ns=0,
                            gripper=(0.02, -0.02), eef=(0.1, 0.2, 0.3), quat=(0.0, 0.0, 0.0, 1.0),
                            joints=True, pose=True):
        pictures = pictures or self.default_pictures
        self._last_stamp = max(self._last_stamp, t_ns, t_ns + joint_offset_ns)
        for pub, rgb in zip(self.cams, pictures):
            pub.publish(image_msg(rgb, encoding, pad, t_ns))
        if joints:
            js = JointState()
            js.header.stamp = _time(t_ns + joint_offset_ns)
            js.name = ARM + FINGERS
            js.position = [0.1 * i for i in range(len(ARM))] + list(gripper)
            self.joints.publish(js)
        if pose:
            ps = PoseStamped()
            ps.header.stamp = _time(t_ns)
            ps.header.frame_id = "base"
            ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = eef
            o = ps.pose.orientation
            o.x, o.y, o.z, o.w = quat
            self.pose.publish(ps)

    def episode_start(self, t_ns: int):
        e = Episode(event=Episode.START, reason="start")
        e.header.stamp = _time(t_ns)
        self.episode.publish(e)

    def request(self, t_ns: int):
        h = Header()
        h.stamp = _time(t_ns)
        self.req.publish(h)

    # --- outputs ------------------------------------------------------------------------

    def chunk_count(self) -> int:
        with self._lock:
            return len(self.chunks)

    def chunks_since(self, index: int) -> list:
        with self._lock:
            return [c for _, c in self.chunks[index:]]

    def wait_chunk(self, pred=lambda c: True, timeout=10.0, since: int | None = None):
        """The first chunk after index `since` (default: now) matching pred, or None."""
        start = self.chunk_count() if since is None else since
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for c in self.chunks_since(start):
                if pred(c):
                    return c
            time.sleep(0.01)
        return None

    def chunk_for(self, t_ns=None, timeout=10.0, settle=0.0, **obs):
        """Publish one observation at t_ns (default now) and request a chunk for it."""
        t_ns = self.now_ns() if t_ns is None else t_ns
        start = self.chunk_count()
        self.publish_observation(t_ns, **obs)
        if settle:
            time.sleep(settle)
        self.request(t_ns)
        return self.wait_chunk(lambda c: stamp_ns(c) == t_ns, timeout, since=start)

    def no_chunk_within(self, seconds: float, since: int) -> bool:
        time.sleep(seconds)
        return self.chunk_count() == since

    def latest_diagnostics(self, timeout=5.0, after: int | None = None) -> dict | None:
        n = len(self.diagnostics) if after is None else after
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if len(self.diagnostics) > n:
                    return self.diagnostics[-1]
            time.sleep(0.05)
        return None

    # --- discovery ----------------------------------------------------------------------

    def wait_for_services(self, timeout=60.0) -> bool:
        end = time.monotonic() + timeout
        for cli in (self.set_cli, self.set_atomic_cli, self.get_cli, self.change_cli, self.state_cli):
            if not cli.wait_for_service(timeout_sec=max(0.1, end - time.monotonic())):
                return False
        return True

    def wait_for_subscribers(self, timeout=60.0) -> bool:
        end = time.monotonic() + timeout
        pubs = [*self.cams, self.joints, self.pose, self.req, self.episode]
        while time.monotonic() < end:
            if all(p.get_subscription_count() > 0 for p in pubs):
                return True
            time.sleep(0.05)
        return False

    def warm_up(self, timeout=60.0):
        """Observation + request until a first chunk comes back (both directions discovered)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            c = self.chunk_for(timeout=min(3.0, max(0.1, end - time.monotonic())))
            if c is not None:
                return c
        return None

    # --- services -----------------------------------------------------------------------

    def _call(self, cli, request, timeout=30.0):
        future = cli.call_async(request)
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            time.sleep(0.005)
        if not future.done():
            cli.remove_pending_request(future)
            raise TimeoutError(f"{cli.srv_name}: no answer in {timeout} s")
        return future.result()

    def set_params(self, atomic=False, **values) -> list[dict]:
        """SetParameters (one result per parameter) or SetParametersAtomically (one result)."""
        msgs = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        if atomic:
            r = self._call(self.set_atomic_cli, SetParametersAtomically.Request(parameters=msgs)).result
            return [{"successful": r.successful, "reason": r.reason}]
        rs = self._call(self.set_cli, SetParameters.Request(parameters=msgs)).results
        return [{"successful": r.successful, "reason": r.reason} for r in rs]

    def get_params(self, *names):
        values = self._call(self.get_cli, GetParameters.Request(names=list(names))).values
        return {n: Parameter.from_parameter_msg(ParameterMsg(name=n, value=v)).value
                for n, v in zip(names, values)}

    def change_state(self, transition: str, timeout=120.0) -> bool:
        req = ChangeState.Request()
        req.transition.id = TRANSITIONS[transition]
        return bool(self._call(self.change_cli, req, timeout).success)

    def get_state(self) -> str:
        return self._call(self.state_cli, GetState.Request()).current_state.label

    def wait_state(self, label: str, timeout=120.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.get_state() == label:
                return True
            time.sleep(0.2)
        return False
