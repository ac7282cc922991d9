"""Generic message <-> plain Python conversion (rosidl_runtime_py has no wheel here)."""
from __future__ import annotations

import array

import numpy as np


def message_to_dict(msg) -> dict:
    """Recursively convert a generated ROS message to dicts, lists and scalars."""
    out = {}
    for name in msg.get_fields_and_field_types():
        out[name] = _to_plain(getattr(msg, name))
    return out


def _to_plain(value):
    if hasattr(value, "get_fields_and_field_types"):
        return message_to_dict(value)
    if isinstance(value, (array.array, np.ndarray)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, bytes):
        return list(value)
    return value


def fill_message(msg, fields: dict):
    """Set fields of `msg` from a (nested) dict, the inverse of message_to_dict."""
    types = msg.get_fields_and_field_types()
    for name, value in fields.items():
        if name not in types:
            raise KeyError(f"{type(msg).__name__} has no field '{name}'")
        current = getattr(msg, name)
        if hasattr(current, "get_fields_and_field_types"):
            fill_message(current, value)
        else:
            setattr(msg, name, value)
    return msg


def float32_sequence(values) -> array.array:
    """A float32[] field value from any array-like, without the slow per-element path."""
    return array.array("f", np.ascontiguousarray(values, dtype=np.float32).tobytes())


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int):
    """Integer nanoseconds -> builtin_interfaces/Time."""
    from builtin_interfaces.msg import Time
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
