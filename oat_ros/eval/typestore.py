"""Message definitions for bags, without ROS: rosbags typestores + the oat_ros_interfaces .msg.

Standard types come from ``rosbags`` ``Stores.ROS2_KILTED``; other types (oat_ros_interfaces,
or any package installed in an ament prefix) are registered from their ``.msg`` text, found in
``<prefix>/share/<pkg>/msg/<Type>.msg`` for the prefixes of ``$AMENT_PREFIX_PATH``,
``$VIRTUAL_ENV`` and ``sys.prefix``, with the repository ``msg/`` dir as a fallback for
oat_ros_interfaces.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ACTION_CHUNK_TYPE = "oat_ros_interfaces/msg/ActionChunk"
EPISODE_TYPE = "oat_ros_interfaces/msg/Episode"
REPO_MSG_DIR = Path(__file__).resolve().parents[2] / "msg"

_PRIMITIVES = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
    "uint32", "int64", "uint64", "string", "wstring", "time", "duration",
}


def share_prefixes() -> list[Path]:
    candidates = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates += [p for p in (os.environ.get("VIRTUAL_ENV"), sys.prefix) if p]
    out: list[Path] = []
    for entry in candidates:
        path = Path(entry)
        if path not in out:
            out.append(path)
    return out


def find_msg_file(msgtype: str) -> Path | None:
    """The .msg file of ``pkg/msg/Type``: installed share dirs first, then the repo ``msg/``."""
    pkg, _, name = msgtype.split("/")
    for prefix in share_prefixes():
        candidate = prefix / "share" / pkg / "msg" / f"{name}.msg"
        if candidate.is_file():
            return candidate
    if pkg == "oat_ros_interfaces":
        candidate = REPO_MSG_DIR / f"{name}.msg"
        if candidate.is_file():
            return candidate
    return None


def msg_dependencies(text: str, pkg: str) -> set[str]:
    """Complex field types referenced by a .msg text, as ``pkg/msg/Type``."""
    deps = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        ftype = line.split()[0]
        ftype = re.sub(r"\[[^\]]*\]$", "", ftype)
        ftype = re.sub(r"<=\d+$", "", ftype)
        if ftype in _PRIMITIVES:
            continue
        if ftype == "Header":
            deps.add("std_msgs/msg/Header")
        elif "/" in ftype:
            parts = ftype.split("/")
            deps.add(f"{parts[0]}/msg/{parts[-1]}")
        else:
            deps.add(f"{pkg}/msg/{ftype}")
    return deps


def ensure_type(store, msgtype: str) -> bool:
    """Register ``msgtype`` (and missing dependencies) from .msg files; False if not found."""
    from rosbags.typesys import get_types_from_msg

    if msgtype in store.fielddefs:
        return True
    todo, found = [msgtype], {}
    while todo:
        name = todo.pop()
        if name in store.fielddefs or name in found:
            continue
        path = find_msg_file(name)
        if path is None:
            return False
        text = path.read_text()
        found[name] = text
        todo.extend(msg_dependencies(text, name.split("/")[0]))
    types = {}
    for name, text in found.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return True


def make_typestore(extra_types=()):
    """A ROS2_KILTED typestore plus the oat_ros_interfaces types (and ``extra_types``)."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    for msgtype in (ACTION_CHUNK_TYPE, EPISODE_TYPE, *extra_types):
        ensure_type(store, msgtype)
    return store


def types_from_definition(msgtype: str, encoding: str, text: str) -> dict:
    """Types of one embedded definition (mcap schema / sqlite3 message_definitions row)."""
    from rosbags.typesys import get_types_from_idl, get_types_from_msg

    if encoding == "ros2msg":
        return get_types_from_msg(text, msgtype)
    sep = "=" * 80 + "\n"
    types: dict = {}
    if text.startswith(f"{sep}IDL: "):
        for part in text.split(sep)[1:]:
            _, idl = part.split("\n", 1)
            types.update(get_types_from_idl(idl))
    else:
        types.update(get_types_from_idl(text))
    return types


def definition_hash(msgtype: str, encoding: str, text: str) -> str:
    """RIHS01 hash of a type from its embedded definition alone."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.EMPTY)
    store.register(types_from_definition(msgtype, encoding, text))
    return store.hash_rihs01(msgtype)
