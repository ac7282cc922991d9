"""Write synthetic evaluation bags with rosbags only (no ROS): what a recorder would write."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from oat_ros.eval.typestore import ACTION_CHUNK_TYPE, EPISODE_TYPE, make_typestore

_NP = {"float32": np.float32, "float64": np.float64, "int8": np.int8, "uint8": np.uint8,
       "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32,
       "int64": np.int64, "uint64": np.uint64, "byte": np.uint8, "char": np.uint8,
       "bool": np.bool_}
_DEFAULT = {"string": "", "bool": False, "float32": 0.0, "float64": 0.0}


def build(ts, msgtype: str, values: dict):
    """A rosbags message object of ``msgtype`` from a (nested) dict; missing fields = 0/''."""
    from rosbags.typesys.base import Nodetype

    def conv(desc, value):
        ntype, spec = desc
        if ntype == Nodetype.NAME:
            return build(ts, spec, value or {})
        if ntype == Nodetype.BASE:
            name = spec[0]
            if value is None:
                return _DEFAULT.get(name, 0)
            return value
        sub, _ = spec
        if sub[0] == Nodetype.BASE and sub[1][0] in _NP:
            return np.asarray(value if value is not None else [], dtype=_NP[sub[1][0]])
        return [conv(sub, v) for v in (value or [])]

    _, fields = ts.fielddefs[msgtype]
    return ts.types[msgtype](**{name: conv(desc, values.get(name)) for name, desc in fields})


def write_bag(path, events, *, storage="mcap", t0_ns=1_700_000_000_000_000_000,
              period_ns=20_000_000, chunk_topic="/oat/action_chunk",
              episode_topic="/oat/episode", close=True, flush_at=()):
    """Write rec_scripts.synthetic events, one every ``period_ns``; returns the Writer.

    mcap: after the events with indices in ``flush_at`` the pending chunk is closed and the file
    flushed (like the recorder's periodic flush); ``writer.flush_sizes`` = file sizes then.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = make_typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(Path(path), version=9, storage_plugin=plugin)
    writer.open()
    writer.flush_sizes = []
    conns = {
        "chunk": writer.add_connection(chunk_topic, ACTION_CHUNK_TYPE, typestore=ts),
        "episode": writer.add_connection(episode_topic, EPISODE_TYPE, typestore=ts),
    }
    for i, ev in enumerate(events):
        msgtype = ACTION_CHUNK_TYPE if ev["kind"] == "chunk" else EPISODE_TYPE
        raw = ts.serialize_cdr(build(ts, msgtype, ev["fields"]), msgtype)
        writer.write(conns[ev["kind"]], t0_ns + i * period_ns, raw)
        if i in flush_at:
            writer.storage.close_chunk()
            writer.storage.bio.flush()
            writer.flush_sizes.append(writer.storage.bio.tell())
    if close:
        writer.close()
    return writer
