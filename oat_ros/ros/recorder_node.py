"""Recorder node: raw CDR from the wire into a rosbag2 bag (mcap by default) with `rosbags`.

The bag is the source of truth of an evaluation (see ``oat_ros.eval``), so the recorder:

* embeds every recorded type's definition (mcap schemas / sqlite3 ``message_definitions``) and
  its RIHS01 type hash, so any rosbag2 reader decodes the bag without oat_ros installed;
  oat_ros_interfaces types come from the installed share dir (``$AMENT_PREFIX_PATH``,
  ``$VIRTUAL_ENV``) with the repository ``msg/`` dir as fallback, standard types from the rosbags
  typestore ``Stores.ROS2_KILTED``;
* never drops ActionChunk / Episode messages: they are subscribed immediately at start (their
  types are known from ``topic_types``), RELIABLE with a deep queue, in their own callback group;
  callbacks only enqueue the bytes and a dedicated writer thread writes them, so writing never
  starves reception; image topics may be downsampled (``image_topics_max_rate_hz``), chunks and
  episode messages never;
* finalizes the bag on SIGINT/SIGTERM (after draining what is already received) and bounds what a
  crash can lose: the pending mcap chunk is closed and flushed every ``flush_period_s`` (sqlite3:
  committed), so a SIGKILL leaves a file that ``oat-ros-eval repair`` (or the eval reader, on its
  own) turns into a readable bag.

Topics may appear late: the node polls the ROS graph every ``discovery_period_s`` and subscribes
(raw=True) as soon as a configured topic has a publisher, with QoS adapted to the publishers'
offers (like ``ros2 bag record``). The bag timestamp of a message is its receive time.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
import queue
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from oat_ros.eval.bags import LOCK_NAME, lock_text
from oat_ros.eval.typestore import ACTION_CHUNK_TYPE, EPISODE_TYPE, ensure_type, make_typestore

NODE_NAME = "recorder"

#: Types that are never downsampled and always subscribed RELIABLE with the deep queue.
CRITICAL_TYPES = frozenset({ACTION_CHUNK_TYPE, EPISODE_TYPE})
#: Types that ``image_topics_max_rate_hz`` downsamples.
IMAGE_TYPES = frozenset({"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"})

DEFAULT_TOPICS = [
    "/oat/action_chunk",
    "/oat/episode",
    "/diagnostics",
    "/joint_states",
    "/eef_pose",
    "/camera/agentview/image_raw",
    "/camera/eye_in_hand/image_raw",
    "/clock",
]
DEFAULT_TOPIC_TYPES = [
    f"/oat/action_chunk={ACTION_CHUNK_TYPE}",
    f"/oat/episode={EPISODE_TYPE}",
]
#: Never recorded by ``all_topics`` (they are graph plumbing, not data).
_ALL_TOPICS_EXCLUDE = ("/rosout", "/parameter_events")


PARAMETER_SPECS = [  # (name, default, description)
    ("output_dir", "runs/bags", "Directory for new bags (named oat_<date>_<time>) "
                                "when bag_path is empty."),
    ("bag_path", "", "Exact bag directory to create (must not exist); overrides "
                     "output_dir. With split_max_duration_s > 0 it holds one bag per "
                     "part (<name>_0000, <name>_0001, ...)."),
    ("storage", "mcap", "rosbag2 storage: mcap (crash-tolerant, default) or sqlite3."),
    ("topics", list(DEFAULT_TOPICS), "Topics to record (absolute or relative to the "
                                     "node namespace)."),
    ("topic_types", list(DEFAULT_TOPIC_TYPES),
     "'/topic=pkg/msg/Type' entries: these topics are subscribed at start, before "
     "any publisher exists (RELIABLE, deep queue for ActionChunk/Episode); other "
     "topics are subscribed when discovered."),
    ("all_topics", False, "Record every topic in the graph (except /rosout and "
                          "/parameter_events), not only `topics`."),
    ("image_topics_max_rate_hz", 0.0, "Downsample sensor_msgs Image/CompressedImage "
                                      "topics to at most this rate; 0 = keep all. "
                                      "ActionChunk/Episode are never downsampled."),
    ("reliable_queue_depth", 1000, "Subscription depth for ActionChunk/Episode "
                                   "topics (RELIABLE)."),
    ("queue_depth", 100, "Subscription depth for the other topics (QoS adapted to "
                         "the publishers' offers)."),
    ("discovery_period_s", 0.5, "How often the graph is polled for new topics."),
    ("flush_period_s", 1.0, "Close the pending mcap chunk and flush (sqlite3: commit) "
                            "at least this often; bounds what a crash can lose."),
    ("split_max_duration_s", 0.0, "Start a new bag part after this many seconds; "
                                  "0 = one bag."),
    ("compression", "none", "mcap chunk compression: none or zstd."),
    ("max_pending_mb", 512.0, "If the writer falls this far behind, messages of "
                              "non-critical topics are dropped (counted); "
                              "ActionChunk/Episode are always queued."),
]


def qos_to_rosbags(profile: QoSProfile):
    """rclpy QoSProfile -> rosbags ``Qos`` (for offered_qos_profiles in the bag metadata)."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    def _time(duration) -> QosTime:
        ns = int(getattr(duration, "nanoseconds", 0))
        return QosTime(ns // 1_000_000_000, ns % 1_000_000_000)

    def _enum(cls, value, unknown):
        try:
            return cls(int(value))
        except ValueError:
            return unknown

    return Qos(
        history=_enum(QosHistory, profile.history, QosHistory.UNKNOWN),
        depth=int(profile.depth),
        reliability=_enum(QosReliability, profile.reliability, QosReliability.UNKNOWN),
        durability=_enum(QosDurability, profile.durability, QosDurability.UNKNOWN),
        deadline=_time(profile.deadline),
        lifespan=_time(profile.lifespan),
        liveliness=_enum(QosLiveliness, profile.liveliness, QosLiveliness.UNKNOWN),
        liveliness_lease_duration=_time(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions),
    )


def import_message_class(msgtype: str):
    """``pkg/msg/Type`` -> the generated Python class (``pkg.msg.Type``)."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def parse_topic_types(entries) -> dict[str, str]:
    """``["/topic=pkg/msg/Type", ...]`` -> {topic: type}."""
    out = {}
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        topic, sep, msgtype = entry.partition("=")
        if not sep or msgtype.count("/") != 2:
            raise ValueError(f"topic_types entry {entry!r} is not '/topic=pkg/msg/Type'")
        out[topic.strip()] = msgtype.strip()
    return out


class RateLimiter:
    """Keep a message when at least 1/rate seconds passed since the last kept one (per key)."""

    def __init__(self, max_rate_hz: float, tolerance: float = 0.02):
        self.period_ns = int(1e9 / max_rate_hz) if max_rate_hz > 0 else 0
        self._slack = int(self.period_ns * tolerance)
        self._last: dict = {}

    def keep(self, key, t_ns: int) -> bool:
        if not self.period_ns:
            return True
        last = self._last.get(key)
        if last is not None and t_ns - last < self.period_ns - self._slack:
            return False
        self._last[key] = t_ns
        return True


# --------------------------------------------------------------------------------------------
# Bag writing (writer thread)
# --------------------------------------------------------------------------------------------

@dataclass
class _Stream:
    """One recorded (topic, type): what the writer needs to create its bag connection."""
    topic: str
    msgtype: str
    critical: bool
    image: bool
    offered_qos: list = field(default_factory=list)
    received: int = 0
    written: int = 0
    downsampled: int = 0
    dropped: int = 0  # non-critical only: writer backlog over max_pending_mb
    lost: int = 0  # critical topics: gaps in a publisher's sequence numbers
    last_seq: dict = field(default_factory=dict)


class BagWriter:
    """rosbags Writer wrapper: lazy connections, periodic flush, optional time-based splits."""

    def __init__(self, path: Path, storage: str, typestore, *, split_max_duration_s: float = 0.0,
                 compression: str = "none", custom_data: dict | None = None):
        self.root = Path(path)
        self.storage = storage
        self.typestore = typestore
        self.split_ns = int(split_max_duration_s * 1e9)
        self.compression = compression
        self.custom_data = dict(custom_data or {})
        self.parts: list[Path] = []
        self._writer = None
        self._connections: dict = {}
        self._part_start = 0
        self._open_part()

    # -- lifecycle
    def _part_path(self) -> Path:
        if not self.split_ns:
            return self.root
        return self.root / f"{self.root.name}_{len(self.parts):04d}"

    def _open_part(self):
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        path = self._part_path()
        if self.split_ns:
            self.root.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        writer = Writer(path, version=9, storage_plugin=plugin)
        if self.compression == "zstd" and self.storage == "mcap":
            writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        writer.open()
        (path / LOCK_NAME).write_text(lock_text())
        self._writer = writer
        self._connections = {}
        self._part_start = time.monotonic_ns()
        self.parts.append(path)

    def _close_part(self, summary: dict | None = None):
        writer, self._writer = self._writer, None
        if writer is None:
            return
        for key, value in self.custom_data.items():
            writer.set_custom_data(key, value)
        if summary is not None:
            writer.set_custom_data("oat_ros.recorder.summary", json.dumps(summary, sort_keys=True))
        writer.close()
        (writer.path / LOCK_NAME).unlink(missing_ok=True)

    def close(self, summary: dict | None = None):
        self._close_part(summary)

    # -- writing
    def write(self, stream: _Stream, t_ns: int, data: bytes):
        if self.split_ns and time.monotonic_ns() - self._part_start >= self.split_ns:
            self._close_part()
            self._open_part()
        key = (stream.topic, stream.msgtype)
        conn = self._connections.get(key)
        if conn is None:
            conn = self._writer.add_connection(stream.topic, stream.msgtype,
                                               typestore=self.typestore,
                                               offered_qos_profiles=stream.offered_qos)
            self._connections[key] = conn
        self._writer.write(conn, t_ns, data)

    def flush(self):
        """Push everything written so far to the OS (a SIGKILL after this loses nothing)."""
        storage = getattr(self._writer, "storage", None)
        if storage is None:
            return
        chunk = getattr(storage, "chunk", None)
        if chunk is not None and hasattr(storage, "close_chunk"):  # rosbags McapWriter
            if chunk.msgs:
                storage.close_chunk()
            storage.bio.flush()
        elif hasattr(storage, "conn"):  # rosbags Sqlite3Writer: one transaction until close
            storage.conn.commit()


# --------------------------------------------------------------------------------------------
# Node
# --------------------------------------------------------------------------------------------

def _descriptor(text: str, **kw) -> ParameterDescriptor:
    return ParameterDescriptor(description=text, **kw)


class RecorderNode(Node):
    """Record configured topics as raw CDR into a rosbag2 bag (see module docstring)."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        p = self._declare_parameters()
        self.storage = p["storage"]
        if self.storage not in ("mcap", "sqlite3"):
            raise ValueError(f"storage must be 'mcap' or 'sqlite3', not {self.storage!r}")
        self.topics = [self._resolve(t) for t in p["topics"] if t.strip()]
        self.topic_types = {self._resolve(k): v
                            for k, v in parse_topic_types(p["topic_types"]).items()}
        self.all_topics = p["all_topics"]
        self.reliable_depth = p["reliable_queue_depth"]
        self.queue_depth = p["queue_depth"]
        self.flush_period_s = p["flush_period_s"]
        self.limiter = RateLimiter(p["image_topics_max_rate_hz"])
        self.max_pending = int(p["max_pending_mb"] * 2**20)
        self._pending = 0
        self._pending_lock = threading.Lock()

        self.bag_path = self._choose_bag_path(p["bag_path"], p["output_dir"])
        self.typestore = make_typestore()
        custom = {"oat_ros.recorder": json.dumps({
            "node": self.get_fully_qualified_name(), "host": socket.gethostname(),
            "pid": os.getpid(), "started_unix_ns": time.time_ns(), "parameters": p,
        }, sort_keys=True)}
        self._writer_args = dict(split_max_duration_s=p["split_max_duration_s"],
                                 compression=p["compression"], custom_data=custom)
        self.writer: BagWriter | None = None  # owned by the writer thread (sqlite3 needs that)

        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[tuple, _Stream] = {}
        self._rec_subs: dict[tuple, object] = {}  # (rclpy Node owns self._subscriptions)
        self._sub_reliable: dict[tuple, bool] = {}
        self._unknown_types: set = set()
        self._last_rx = time.monotonic()
        self._writer_error: BaseException | None = None
        self._stop_writer = threading.Event()
        self._writer_thread = threading.Thread(target=self._writer_loop, name="bag_writer",
                                               daemon=True)
        self._writer_ready = threading.Event()
        self._writer_thread.start()
        self._writer_ready.wait()
        if self._writer_error is not None:
            raise RuntimeError(f"cannot open bag {self.bag_path}: {self._writer_error!r}")
        try:
            # Chunks/episodes never wait behind image callbacks: own group (and thread).
            self._critical_group = MutuallyExclusiveCallbackGroup()
            self._other_group = MutuallyExclusiveCallbackGroup()
            self._graph_group = MutuallyExclusiveCallbackGroup()
            wanted = self.topics + ([t for t in self.topic_types if t not in self.topics]
                                    if self.all_topics else [])
            for topic in wanted:  # known types: subscribe now, before any publisher exists
                if topic in self.topic_types:
                    self._subscribe(topic, self.topic_types[topic], publishers=[])
            self._discover()
            self.create_timer(p["discovery_period_s"], self._discover,
                              callback_group=self._graph_group)
        except BaseException:
            self.finish()
            raise
        self.get_logger().info(
            f"Recording to {self.bag_path} ({self.storage}); topics: "
            f"{'ALL' if self.all_topics else ', '.join(self.topics)}")

    # -- parameters
    def _declare_parameters(self) -> dict:
        specs = PARAMETER_SPECS
        out = {}
        for name, default, text in specs:
            kw = {"read_only": True}
            if name == "storage":
                kw["additional_constraints"] = "mcap | sqlite3"
            value = self.declare_parameter(name, default, _descriptor(text, **kw)).value
            out[name] = list(value) if isinstance(value, (list, tuple)) else value
        return out

    def _resolve(self, topic: str) -> str:
        topic = topic.strip()
        try:
            return self.resolve_topic_name(topic)
        except Exception:
            return topic if topic.startswith("/") else "/" + topic

    @staticmethod
    def _choose_bag_path(bag_path: str, output_dir: str) -> Path:
        if bag_path:
            path = Path(bag_path).expanduser()
            if path.exists():
                raise FileExistsError(f"bag_path {path} exists already; choose a new one")
            return path
        base = Path(output_dir).expanduser() / time.strftime("oat_%Y%m%d_%H%M%S")
        path, i = base, 1
        while path.exists():
            path = base.with_name(f"{base.name}_{i}")
            i += 1
        return path

    # -- subscriptions
    def _discover(self):
        try:
            graph = self.get_topic_names_and_types()
        except Exception:  # context shutting down
            return
        wanted = set(self.topics)
        for topic, types in graph:
            if topic not in wanted and not (self.all_topics
                                            and not topic.endswith(_ALL_TOPICS_EXCLUDE)):
                continue
            for msgtype in types:
                key = (topic, msgtype)
                if key in self._rec_subs or key in self._unknown_types:
                    self._maybe_adapt(topic, msgtype)
                    continue
                publishers = [i for i in self.get_publishers_info_by_topic(topic)
                              if i.topic_type == msgtype]
                if publishers:
                    self._subscribe(topic, msgtype, publishers)

    def _qos_for(self, msgtype: str, publishers) -> QoSProfile:
        critical = msgtype in CRITICAL_TYPES
        reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                       for i in publishers)  # no publisher yet: RELIABLE
        latched = bool(publishers) and all(
            i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in publishers)
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=self.reliable_depth if critical else self.queue_depth,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

    def _subscribe(self, topic: str, msgtype: str, publishers):
        key = (topic, msgtype)
        try:
            cls = import_message_class(msgtype)
        except (ImportError, AttributeError, ValueError) as err:
            self._unknown_types.add(key)
            self.get_logger().error(f"cannot record {topic} [{msgtype}]: {err}")
            return
        if not ensure_type(self.typestore, msgtype):
            self._unknown_types.add(key)
            self.get_logger().error(f"cannot record {topic} [{msgtype}]: no .msg definition "
                                    "found to embed in the bag")
            return
        stream = self._streams.get(key)
        if stream is None:
            stream = _Stream(topic, msgtype, critical=msgtype in CRITICAL_TYPES,
                             image=msgtype in IMAGE_TYPES)
            self._streams[key] = stream
        if publishers:
            stream.offered_qos = [qos_to_rosbags(i.qos_profile) for i in publishers]
        qos = self._qos_for(msgtype, publishers)
        group = self._critical_group if stream.critical else self._other_group

        # partial(...)(raw, info): rclpy passes MessageInfo to two-argument callbacks.
        self._rec_subs[key] = self.create_subscription(
            cls, topic, functools.partial(self._on_message, stream), qos,
            callback_group=group, raw=True)
        self._sub_reliable[key] = qos.reliability == ReliabilityPolicy.RELIABLE
        self.get_logger().info(
            f"subscribed {topic} [{msgtype}] "
            f"{'RELIABLE' if self._sub_reliable[key] else 'BEST_EFFORT'} depth {qos.depth}")

    def _maybe_adapt(self, topic: str, msgtype: str):
        """A RELIABLE subscription never matches a BEST_EFFORT publisher: downgrade it."""
        key = (topic, msgtype)
        if key not in self._rec_subs or not self._sub_reliable.get(key):
            return
        publishers = [i for i in self.get_publishers_info_by_topic(topic)
                      if i.topic_type == msgtype]
        stream = self._streams[key]
        if publishers and not stream.offered_qos:
            stream.offered_qos = [qos_to_rosbags(i.qos_profile) for i in publishers]
        if any(i.qos_profile.reliability != ReliabilityPolicy.RELIABLE for i in publishers):
            self.get_logger().warn(f"{topic}: a publisher offers BEST_EFFORT; re-subscribing "
                                   "BEST_EFFORT (messages of that topic may be lost)")
            self.destroy_subscription(self._rec_subs.pop(key))
            self._subscribe(topic, msgtype, publishers)

    def _on_message(self, stream: _Stream, raw: bytes, info):
        try:
            t_ns = int(info["received_timestamp"])
        except (KeyError, TypeError, ValueError):
            t_ns = 0
        if t_ns <= 0:
            t_ns = time.time_ns()
        self._last_rx = time.monotonic()
        stream.received += 1
        if stream.critical:
            self._check_gap(stream, info)
        if stream.image and not self.limiter.keep(stream.topic, t_ns):
            stream.downsampled += 1
            return
        if not stream.offered_qos:
            try:
                stream.offered_qos = [qos_to_rosbags(i.qos_profile) for i in
                                      self.get_publishers_info_by_topic(stream.topic)
                                      if i.topic_type == stream.msgtype]
            except Exception:
                pass
        size = len(raw)
        with self._pending_lock:
            if not stream.critical and self._pending + size > self.max_pending:
                stream.dropped += 1
                return
            self._pending += size
        self._queue.put((stream, t_ns, raw))

    def _check_gap(self, stream: _Stream, info):
        """Count messages a publisher sent that never arrived (sequence-number gaps)."""
        try:
            seq = info.get("publication_sequence_number")
            gid = info.get("publisher_gid")
        except AttributeError:
            return
        if seq is None or gid is None:
            return
        gid = repr(gid)
        last = stream.last_seq.get(gid)
        if last is not None and seq > last + 1:
            stream.lost += seq - last - 1
            self.get_logger().warn(f"{stream.topic}: {seq - last - 1} message(s) from one "
                                   "publisher never arrived")
        stream.last_seq[gid] = seq if last is None else max(last, seq)

    # -- writer thread
    def _writer_loop(self):
        """Writer thread: opens the bag, writes queued messages, flushes, finalizes."""
        try:
            self.writer = BagWriter(self.bag_path, self.storage, self.typestore,
                                    **self._writer_args)
        except BaseException as err:  # reported by __init__
            self._writer_error = err
            return
        finally:
            self._writer_ready.set()
        last_flush = time.monotonic()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=min(0.2, self.flush_period_s))
                except queue.Empty:
                    item = None
                while item is not None:
                    stream, t_ns, raw = item
                    self.writer.write(stream, t_ns, raw)
                    stream.written += 1
                    with self._pending_lock:
                        self._pending -= len(raw)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                now = time.monotonic()
                if now - last_flush >= self.flush_period_s:
                    self.writer.flush()
                    last_flush = now
                if self._stop_writer.is_set() and self._queue.empty():
                    break
            self.writer.close(self.summary())
        except BaseException as err:  # surfaced by the main loop / finish()
            self._writer_error = err
            self.get_logger().error(f"bag writer failed: {err!r}")

    @property
    def writer_alive(self) -> bool:
        return self._writer_thread.is_alive()

    @property
    def seconds_since_last_message(self) -> float:
        return time.monotonic() - self._last_rx

    def summary(self) -> dict:
        return {f"{s.topic} [{s.msgtype}]": {"received": s.received, "written": s.written,
                                             "downsampled": s.downsampled,
                                             "dropped": s.dropped, "lost": s.lost}
                for s in self._streams.values()}

    def finish(self):
        """Stop the writer thread after it wrote everything queued, then finalize the bag."""
        for sub in list(self._rec_subs.values()):
            self.destroy_subscription(sub)
        self._rec_subs.clear()
        self._stop_writer.set()
        self._writer_thread.join()  # writes what is queued, then finalizes the bag
        summary = self.summary()
        lines = [f"  {name}: {c['written']} written"
                 + (f" ({c['downsampled']} downsampled)" if c["downsampled"] else "")
                 + (f" ({c['dropped']} dropped: writer backlog)" if c["dropped"] else "")
                 + (f" ({c['lost']} LOST)" if c["lost"] else "")
                 for name, c in sorted(summary.items())]
        total = sum(c["written"] for c in summary.values())
        state = "Closed bag" if self._writer_error is None else "Bag NOT finalized"
        self.get_logger().info(f"{state} {self.bag_path}: {total} messages\n"
                               + "\n".join(lines or ["  (no messages)"]))
        if self._writer_error is not None:
            raise RuntimeError(f"bag writer failed: {self._writer_error!r}")


def usage() -> str:
    lines = [
        "usage: oat-ros-recorder [--ros-args -p NAME:=VALUE ... | --params-file FILE]",
        "",
        "Record topics (raw CDR) into a rosbag2 bag with embedded message definitions.",
        "SIGINT/SIGTERM finalize the bag; after a crash run `oat-ros-eval repair BAG`.",
        "",
        f"parameters (node name '{NODE_NAME}'):",
    ]
    for name, default, text in PARAMETER_SPECS:
        lines.append(f"  {name} (default {json.dumps(default)})")
        lines.append(f"      {text}")
    return "\n".join(lines)


def main(args=None) -> int:
    """Console entry point (``oat-ros-recorder``); ROS args: ``--ros-args -p name:=value``."""
    from rclpy.signals import SignalHandlerOptions

    argv = sys.argv[1:] if args is None else list(args)
    user_args = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    if "-h" in user_args or "--help" in user_args:
        print(usage())
        return 0

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    hurry = threading.Event()

    def _on_signal(signum, _frame):
        if stop.is_set():
            hurry.set()  # second signal: skip the drain
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    node = None
    code = 0
    try:
        node = RecorderNode()
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
            if not node.writer_alive:
                code = 1
                break
        # Drain what DDS already delivered (acknowledged) before finalizing: spin at least
        # 0.3 s, longer while messages keep coming, at most 2 s.
        start = time.monotonic()
        while not hurry.is_set() and rclpy.ok():
            elapsed = time.monotonic() - start
            if elapsed > 2.0 or (elapsed > 0.3 and node.seconds_since_last_message > 0.2):
                break
            executor.spin_once(timeout_sec=0.05)
        executor.shutdown(timeout_sec=1.0)
        node.finish()
    except Exception as err:  # noqa: BLE001 - report and exit non-zero
        import traceback

        traceback.print_exc()
        print(f"recorder: {err}", file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
