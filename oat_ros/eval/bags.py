"""Read evaluation bags (no ROS needed): episodes and chunks, plus repair of crash-left bags.

A bag alone is enough: messages are decoded with the type definitions embedded in the bag
(rosbags ``AnyReader``), falling back to the ROS2_KILTED typestore + oat_ros_interfaces .msg files
for bags without definitions. ActionChunk / Episode connections are selected by *type*, so any
topic names (namespaces, remaps) work.

Episodes come from Episode messages (START, then END or ABORT, keyed by run_id + episode_index);
a chunk belongs to the episode whose [START, END + grace] window holds its receive (bag) time.

A recorder killed hard leaves no ``metadata.yaml``: :func:`repair_bag` rebuilds a finalized bag
from what reached the disk (mcap: every complete chunk; sqlite3: every committed row), keeping the
original as ``<file>.crashed``. :func:`load` repairs such bags on its own (``repair=True``).
"""
from __future__ import annotations

import bisect
import json
import os
import shutil
import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import numpy as np

from oat_ros.eval.typestore import (ACTION_CHUNK_TYPE, EPISODE_TYPE, definition_hash,
                                    make_typestore)

LOCK_NAME = ".oat_recording"  # written by the recorder (its pid) while a bag is open
STORAGE_SUFFIXES = (".mcap", ".db3")
EVENT_START, EVENT_END, EVENT_ABORT = 0, 1, 2


class BagError(RuntimeError):
    """A bag that cannot be read (and why, with what to do)."""


# --------------------------------------------------------------------------------------------
# Finding bags
# --------------------------------------------------------------------------------------------

def _storage_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in STORAGE_SUFFIXES)


def is_bag_dir(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / "metadata.yaml").is_file() or bool(_storage_files(path)))


def needs_repair(path: Path) -> bool:
    """A bag directory with storage files but no metadata.yaml (recorder crashed/killed)."""
    path = Path(path)
    return is_bag_dir(path) and not (path / "metadata.yaml").is_file()


def find_bags(path) -> list[Path]:
    """Bag directories in ``path``: a bag dir, a storage file / metadata.yaml in one, or any
    directory holding bags (searched recursively, e.g. an output_dir or a split recording)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file():
        if path.name == "metadata.yaml" or path.suffix in STORAGE_SUFFIXES:
            return [path.parent]
        raise BagError(f"{path} is not a bag (expected a bag directory, .mcap, .db3 or "
                       "metadata.yaml)")
    if is_bag_dir(path):
        return [path]
    found = sorted({p.parent for suffix in ("metadata.yaml", "*.mcap", "*.db3")
                    for p in path.rglob(suffix)
                    if not any(part.startswith(".") for part in p.relative_to(path).parts)})
    # a bag dir nested inside another bag dir is not expected; keep the outermost
    return [p for p in found if not any(q != p and q in p.parents for q in found)]


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first); None if unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def lock_text() -> str:
    """What the recorder writes to LOCK_NAME: its pid and start time (tells pid reuse apart)."""
    stat = _proc_stat(os.getpid())
    start = stat[19] if stat and len(stat) > 19 else ""
    return f"{os.getpid()} {start}".strip() + "\n"


def bag_is_live(path: Path) -> int | None:
    """pid of a recorder still writing this bag (its lock file names a live process)."""
    try:
        fields_ = (Path(path) / LOCK_NAME).read_text().split()
        pid = int(fields_[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid == os.getpid():
        return pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is not None:  # Linux: a zombie, or another process that got the pid, is not it
        if stat[0] in ("Z", "X"):
            return None
        if len(fields_) > 1 and len(stat) > 19 and stat[19] != fields_[1]:
            return None
    return pid


# --------------------------------------------------------------------------------------------
# Repair
# --------------------------------------------------------------------------------------------

@dataclass
class RepairResult:
    path: str
    storage: str
    messages: int
    topics: dict
    truncated: bool
    note: str = ""
    backup: str | None = None


def repair_bag(path, *, backup: bool = True, force: bool = False) -> RepairResult:
    """Turn a crash-left bag directory (storage file, no metadata.yaml) into a readable bag.

    Everything decodable is copied into a freshly written bag (same directory, same file name,
    rosbag2 metadata version 9); the original file is kept as ``<file>.crashed`` unless
    ``backup=False``. A bag that already has metadata.yaml is left alone. A bag whose recorder
    is still running is refused unless ``force``.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = Path(path)
    if path.is_file():
        path = path.parent
    if (path / "metadata.yaml").is_file():
        return RepairResult(str(path), "", 0, {}, False, note="already finalized; nothing to do")
    files = _storage_files(path)
    if not files:
        raise BagError(f"{path}: no .mcap or .db3 file to repair")
    if len(files) > 1:
        raise BagError(f"{path}: several storage files ({', '.join(f.name for f in files)}); "
                       "repair one bag directory per file")
    pid = bag_is_live(path)
    if pid is not None and not force:
        raise BagError(f"{path} is being recorded (recorder pid {pid}); stop the recorder "
                       "first (or use force)")
    src = files[0]
    storage = "mcap" if src.suffix == ".mcap" else "sqlite3"
    tmp_root = path.parent / f".{path.name}.repair-{os.getpid()}"
    if tmp_root.exists():
        shutil.rmtree(tmp_root)
    tmp_root.mkdir(parents=True)
    out = tmp_root / src.stem  # rosbags names the storage file after the directory
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(out, version=9, storage_plugin=plugin)
    writer.open()
    try:
        if storage == "mcap":
            truncated, note = _copy_mcap(src, writer)
        else:
            truncated, note = _copy_sqlite3(src, writer)
        counts = {c.topic: writer.counts[c.id] for c in writer.connections}
        writer.set_custom_data("oat_ros.repair", json.dumps(
            {"source": src.name, "truncated": truncated, "note": note}, sort_keys=True))
        writer.close()
    except BaseException:
        writer.abort()
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    kept = None
    if backup:
        kept = src.with_name(src.name + ".crashed")
        src.rename(kept)
    else:
        src.unlink()
    for leftover in (path / (src.name + "-journal"), path / (src.name + "-wal")):
        leftover.unlink(missing_ok=True)
    for item in out.iterdir():
        item.rename(path / item.name)
    shutil.rmtree(tmp_root, ignore_errors=True)
    (path / LOCK_NAME).unlink(missing_ok=True)
    return RepairResult(str(path), storage, sum(counts.values()), counts, truncated, note,
                        str(kept) if kept else None)


def _add_connection(writer, topic, msgtype, encoding, definition, digest, fmt, qos):
    if not digest:
        digest = definition_hash(msgtype, encoding, definition)
    return writer.add_connection(topic, msgtype, msgdef=definition, rihs01=digest,
                                 serialization_format=fmt or "cdr", offered_qos_profiles=qos)


def _decompress(data: bytes, compression: str) -> bytes:
    if not compression:
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # Python >= 3.14
        except ImportError:
            from backports import zstd  # a rosbags dependency
        return zstd.decompress(data)
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    raise BagError(f"unsupported mcap chunk compression {compression!r}")


def _mcap_records(f):
    """Top-level mcap records, with chunks opened here (any compression rosbags writes)."""
    from io import BytesIO

    from mcap.records import Chunk
    from mcap.stream_reader import StreamReader

    for record in StreamReader(f, emit_chunks=True, record_size_limit=None).records:
        if isinstance(record, Chunk):
            data = _decompress(record.data, record.compression)
            yield from StreamReader(BytesIO(data), skip_magic=True,
                                    record_size_limit=None).records
        else:
            yield record


def _copy_mcap(src: Path, writer) -> tuple[bool, str]:
    from mcap.records import Channel, Message, Schema
    from rosbags.rosbag2.metadata import parse_qos

    schemas, conns = {}, {}
    truncated, note = False, ""
    size = src.stat().st_size
    good = 0  # end of the last complete record
    with open(src, "rb") as f:
        try:
            for record in _mcap_records(f):
                good = f.tell()
                if isinstance(record, Schema):
                    schemas[record.id] = record
                elif isinstance(record, Channel):
                    if record.id in conns:
                        continue
                    schema = schemas.get(record.schema_id)
                    if schema is None:
                        note += f"channel {record.topic}: no schema, skipped; "
                        conns[record.id] = None
                        continue
                    qos_text = record.metadata.get("offered_qos_profiles", "")
                    try:
                        qos = parse_qos(qos_text) if qos_text else []
                    except Exception:  # noqa: BLE001 - QoS is informative only
                        qos = []
                    conns[record.id] = _add_connection(
                        writer, record.topic, schema.name, schema.encoding,
                        schema.data.decode(), record.metadata.get("topic_type_hash", ""),
                        record.message_encoding, qos)
                elif isinstance(record, Message):
                    conn = conns.get(record.channel_id)
                    if conn is not None:
                        writer.write(conn, record.log_time, record.data)
        except Exception as err:  # noqa: BLE001 - a crash leaves no footer / a partial record
            if size - good > 0:
                truncated = True
                note += (f"dropped {size - good} bytes of an incomplete last record "
                         f"({type(err).__name__}); ")
            else:
                note += "no summary/footer (recorder did not close the file); "
    return truncated, note.strip()


def _copy_sqlite3(src: Path, writer) -> tuple[bool, str]:
    from rosbags.rosbag2.metadata import parse_qos

    # Opened read-write: SQLite rolls back the hot journal, keeping committed rows only.
    con = sqlite3.connect(str(src))
    try:
        defs = {row[0]: row[1:] for row in con.execute(
            "SELECT topic_type, encoding, encoded_message_definition, type_description_hash "
            "FROM message_definitions")}
        conns = {}
        for tid, name, msgtype, fmt, qos_text, digest in con.execute(
                "SELECT id, name, type, serialization_format, offered_qos_profiles, "
                "type_description_hash FROM topics ORDER BY id"):
            encoding, text, _ = defs.get(msgtype, ("", "", ""))
            if not text:
                continue
            try:
                qos = parse_qos(qos_text) if qos_text else []
            except Exception:  # noqa: BLE001
                qos = []
            conns[tid] = _add_connection(writer, name, msgtype, encoding, text, digest, fmt, qos)
        for tid, stamp, data in con.execute(
                "SELECT topic_id, timestamp, data FROM messages ORDER BY id"):
            if tid in conns:
                writer.write(conns[tid], stamp, data)
    finally:
        con.close()
    return False, ""


# --------------------------------------------------------------------------------------------
# Generic reading
# --------------------------------------------------------------------------------------------

def prepare_bag(path: Path, *, repair: bool = True, log=None) -> Path:
    """The bag dir ready to read: repairs a crash-left bag (if ``repair``) or says how."""
    path = Path(path)
    if needs_repair(path):
        if not repair:
            raise BagError(f"{path} has no metadata.yaml (recorder crashed or still running); "
                           f"run `oat-ros-eval repair {path}` first")
        result = repair_bag(path)
        if log:
            log(f"repaired crash-left bag {path}: {result.messages} messages"
                + (" (last record truncated)" if result.truncated else "")
                + (f"; original kept as {Path(result.backup).name}" if result.backup else ""))
    return path


def read_messages(bag, msgtypes=None, topics=None):
    """Yield (topic, msgtype, receive_time_ns, decoded message) from one bag directory."""
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(bag)], default_typestore=make_typestore()) as reader:
        conns = [c for c in reader.connections
                 if (msgtypes is None or c.msgtype in msgtypes)
                 and (topics is None or c.topic in topics)]
        if not conns:  # rosbags reads every connection when given none
            return
        for conn, t_ns, raw in reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, t_ns, reader.deserialize(raw, conn.msgtype)


def message_to_dict(msg) -> dict:
    """A decoded rosbags message as plain dicts/lists/scalars (same shape as the ROS side)."""
    out = {}
    for f in fields(msg):
        if f.name.startswith("_") or f.name != f.name.lower():
            continue  # constants (ROS field names are lower case) and rosbags internals
        out[f.name] = _plain(getattr(msg, f.name))
    return out


def _plain(value):
    if is_dataclass(value):
        return message_to_dict(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def topic_counts(bag) -> dict:
    """{topic: message count} from a bag's metadata."""
    from rosbags.rosbag2 import Reader

    with Reader(Path(bag)) as reader:
        return {c.topic: c.msgcount for c in reader.connections}


# --------------------------------------------------------------------------------------------
# Evaluation records
# --------------------------------------------------------------------------------------------

@dataclass
class Episode:
    run_id: str
    episode_index: int
    suite: str
    task_index: int
    task_uid: int
    task_name: str
    language_instruction: str
    init_state_index: int
    seed: int
    status: str = "incomplete"  # success | failure | aborted | incomplete
    success: bool = False
    reason: str = ""
    step: int = 0
    max_steps: int = 0
    chunks_executed: int = 0
    start_ns: int | None = None
    end_ns: int | None = None
    bag: str = ""
    n_chunks: int = 0

    @property
    def completed(self) -> bool:
        return self.status in ("success", "failure")

    @property
    def task_key(self) -> tuple:
        return (self.suite, self.task_index)

    @property
    def pair_key(self) -> tuple:
        return (self.suite, self.task_index, self.init_state_index, self.seed)


CHUNK_FIELDS = (
    "seq", "policy_id", "task_uid", "horizon", "action_dim", "n_action_steps",
    "control_period_s", "decode_mode", "tokens_generated", "tokens_max", "prefix_len",
    "refine_iters", "temperature", "top_k", "seed", "deadline_ms", "deadline_reference",
    "deadline_met", "truncated", "observation_age_ms", "latency_ms", "encode_ms", "decode_ms",
    "detokenize_ms", "clipped",
)


@dataclass
class Chunk:
    t_ns: int
    stamp_ns: int
    seq: int
    policy_id: str
    task_uid: int
    horizon: int
    action_dim: int
    n_action_steps: int
    control_period_s: float
    decode_mode: str
    tokens_generated: int
    tokens_max: int
    prefix_len: int
    refine_iters: int
    temperature: float
    top_k: int
    seed: int
    deadline_ms: float
    deadline_reference: int
    deadline_met: bool
    truncated: bool
    observation_age_ms: float
    latency_ms: float
    encode_ms: float
    decode_ms: float
    detokenize_ms: float
    clipped: bool
    bag: str = ""
    run_id: str | None = None
    episode: int | None = None  # index into Dataset.episodes

    @property
    def config_label(self) -> str:
        return decode_config_label(self.decode_mode, self.tokens_max, self.prefix_len,
                                   self.refine_iters)


def decode_config_label(mode: str, tokens_max: int, prefix_len: int, refine_iters: int) -> str:
    if mode == "blockwise":
        return f"blockwise P={prefix_len} r={refine_iters}"
    if mode == "ar":
        return f"ar K={tokens_max}"
    return f"{mode or '?'} K={tokens_max}"


@dataclass
class Dataset:
    """Everything an evaluation needs, from one or many bags."""
    bags: list = field(default_factory=list)
    episodes: list = field(default_factory=list)
    chunks: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def runs(self) -> dict:
        """{run_id: summary} with the decode configuration(s) actually used (from the chunks)."""
        out: dict = {}
        for ep in self.episodes:
            run = out.setdefault(ep.run_id, _new_run())
            run["episodes"] += 1
            run["bags"].add(ep.bag)
        for ch in self.chunks:
            run = out.setdefault(ch.run_id if ch.run_id is not None else "(no episode)",
                                 _new_run())
            run["chunks"] += 1
            run["bags"].add(ch.bag)
            run["decode"][ch.config_label] += 1
            run["policies"][ch.policy_id] += 1
            run["deadlines_ms"][float(ch.deadline_ms)] += 1
        for run in out.values():
            run["bags"] = sorted(run["bags"])
            run["decode"] = dict(run["decode"].most_common())
            run["policies"] = dict(run["policies"].most_common())
            run["deadlines_ms"] = {str(k): v for k, v in sorted(run["deadlines_ms"].items())}
            run["decode_modes"] = sorted({k.split()[0] for k in run["decode"]})
        return out

    def decode_label(self) -> str:
        """Short label of the decode configuration(s), e.g. 'ar K=8' or 'blockwise P=4 r=1'."""
        counts = Counter(ch.config_label for ch in self.chunks)
        if not counts:
            return "?"
        return " + ".join(label for label, _ in counts.most_common())


def _new_run() -> dict:
    return {"episodes": 0, "chunks": 0, "bags": set(), "decode": Counter(),
            "policies": Counter(), "deadlines_ms": Counter()}


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def load(paths, *, repair: bool = True, grace_s: float = 0.1, log=None) -> Dataset:
    """Read one or many bags (dirs, files, or directories of bags) into a :class:`Dataset`."""
    bags: list[Path] = []
    for p in paths:
        for bag in find_bags(p):
            if bag not in bags:
                bags.append(bag)
    data = Dataset(bags=[str(b) for b in bags])
    if not bags:
        data.warnings.append("no bags found")
        return data
    episode_msgs, chunk_msgs = [], []
    for bag in bags:
        bag = prepare_bag(bag, repair=repair, log=log)
        for _, msgtype, t_ns, msg in read_messages(bag, {ACTION_CHUNK_TYPE, EPISODE_TYPE}):
            (episode_msgs if msgtype == EPISODE_TYPE else chunk_msgs).append((t_ns, str(bag), msg))
    episode_msgs.sort(key=lambda x: x[0])
    chunk_msgs.sort(key=lambda x: x[0])
    data.episodes = build_episodes(episode_msgs, data.warnings)
    data.chunks = [Chunk(t_ns=t, stamp_ns=_stamp_ns(m.header), bag=bag,
                         **{name: _plain(getattr(m, name)) for name in CHUNK_FIELDS})
                   for t, bag, m in chunk_msgs]
    assign_chunks(data.episodes, data.chunks, grace_ns=int(grace_s * 1e9))
    return data


def build_episodes(events, warnings=None) -> list[Episode]:
    """Episodes from time-sorted (t_ns, bag, Episode msg) events (START -> END/ABORT)."""
    warnings = warnings if warnings is not None else []
    out: list[Episode] = []
    running: dict = {}
    for t_ns, bag, m in events:
        key = (m.run_id, int(m.episode_index))
        if m.event == EVENT_START:
            if key in running:
                warnings.append(f"episode {key} started twice; the first is incomplete")
            ep = Episode(m.run_id, int(m.episode_index), m.suite, int(m.task_index),
                         int(m.task_uid), m.task_name, m.language_instruction,
                         int(m.init_state_index), int(m.seed), start_ns=t_ns, bag=bag,
                         max_steps=int(m.max_steps))
            running[key] = ep
            out.append(ep)
            continue
        ep = running.pop(key, None)
        if ep is None:
            warnings.append(f"episode {key} ended without a recorded START")
            ep = Episode(m.run_id, int(m.episode_index), m.suite, int(m.task_index),
                         int(m.task_uid), m.task_name, m.language_instruction,
                         int(m.init_state_index), int(m.seed), bag=bag)
            out.append(ep)
        for name in ("suite", "task_name", "language_instruction"):
            value = getattr(m, name)
            if value:
                setattr(ep, name, value)
        ep.end_ns = t_ns
        ep.success = bool(m.success)
        ep.reason = m.reason
        ep.step = int(m.step)
        ep.max_steps = int(m.max_steps) or ep.max_steps
        ep.chunks_executed = int(m.chunks_executed)
        if m.event == EVENT_ABORT:
            ep.status = "aborted"
        else:
            ep.status = "success" if m.success else "failure"
    return out


def assign_chunks(episodes: list[Episode], chunks: list[Chunk], grace_ns: int = 100_000_000,
                  lookback: int = 16):
    """Attach each chunk to the episode whose [START, END + grace] holds its receive time.

    A chunk is matched only against the episodes recorded in its own bag when that bag has any
    (bags of parallel graphs overlap in time: matching across them would mix their episodes);
    otherwise against all episodes. The latest-started matching episode wins (``lookback``
    earlier windows are checked when episodes overlap). Chunks outside every episode keep
    ``episode=None``; with a single run_id they still count for that run.
    """
    by_bag: dict = {}
    for i, ep in enumerate(episodes):
        by_bag.setdefault(ep.bag, []).append(i)
    groups: dict = {}
    for ch in chunks:
        key = ch.bag if ch.bag and ch.bag in by_bag else None
        groups.setdefault(key, []).append(ch)
    for key, group in groups.items():
        _assign_in_time(episodes, by_bag[key] if key is not None else range(len(episodes)),
                        group, grace_ns, lookback)
    run_ids = {ep.run_id for ep in episodes}
    if len(run_ids) == 1:  # single run: chunks between episodes still belong to it
        only = next(iter(run_ids))
        for ch in chunks:
            if ch.run_id is None:
                ch.run_id = only


def _assign_in_time(episodes, candidates, chunks, grace_ns: int, lookback: int):
    windows = sorted((episodes[i].start_ns, i) for i in candidates if episodes[i].start_ns is not None)
    starts = [w[0] for w in windows]
    # window end: END + grace; an episode that never ended lasts until the next START of its run
    limit = {}
    for k, (start, i) in enumerate(windows):
        ep = episodes[i]
        if ep.end_ns is not None:
            limit[i] = ep.end_ns + grace_ns
        else:
            later = [s for s, j in windows[k + 1:] if episodes[j].run_id == ep.run_id]
            limit[i] = later[0] - 1 if later else float("inf")
    for ch in chunks:
        pos = bisect.bisect_right(starts, ch.t_ns) - 1
        for k in range(pos, max(-1, pos - lookback), -1):
            i = windows[k][1]
            if ch.t_ns <= limit[i]:
                ch.episode = i
                ch.run_id = episodes[i].run_id
                episodes[i].n_chunks += 1
                break


def dataset_to_json(data: Dataset) -> dict:
    return {"bags": data.bags, "warnings": data.warnings,
            "episodes": [asdict(e) for e in data.episodes],
            "n_chunks": len(data.chunks)}
