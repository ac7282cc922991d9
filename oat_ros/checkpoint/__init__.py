"""Checkpoint loading: original OAT workspace checkpoints and the native format.

`load_policy(path)` dispatches on the path: a native directory / config.yaml /
model.safetensors, or an original `.ckpt` (read through a restricted unpickler).
"""
from __future__ import annotations

import os

from ..errors import CheckpointError
from .native import is_native, load_native, save_native
from .upstream import load_tail, load_upstream_policy, load_upstream_tokenizer

__all__ = ["load_policy", "load_native", "save_native", "load_upstream_policy",
           "load_upstream_tokenizer", "load_tail"]


def load_policy(path, tail_path=None, *, use_ema=None, allow_unsafe_pickle: bool = False,
                map_location="cpu"):
    """Load an OATPolicy (eval mode) from a native export or an original checkpoint.

    tail_path: optional Blockwise tail `.pt` (a native export carries its tail already;
    passing one replaces it). use_ema / allow_unsafe_pickle apply to original checkpoints.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if is_native(path):
        policy = load_native(path, map_location)
        if tail_path is not None:
            load_tail(tail_path, policy, map_location)
        return policy
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: directory without a native config.yaml")
    return load_upstream_policy(path, tail_path, use_ema=use_ema,
                                allow_unsafe_pickle=allow_unsafe_pickle, map_location=map_location)
