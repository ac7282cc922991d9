"""Pickle-free native format: a directory with `model.safetensors` + `config.yaml`.

config.yaml holds the PolicyConfig, the tail config (or null) and the alias table: tensors
that share storage in the module (tied `model.head.weight` = `model.tok_emb.weight`, the
robomimic `backbone.*` = `nets.0.*` duplicates) are stored once and re-expanded on load,
so a round trip is bit-exact.

`save_native(..., half=True)` stores the float32 *parameters* as float16 (buffers such as
normalizer statistics stay float32) to halve the file, e.g. for the policy shipped inside the
package; loading casts them back to float32 (config.yaml says `storage_dtype: float16`).
"""
from __future__ import annotations

import os
from dataclasses import asdict

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from ..model.policy import OATPolicy, PolicyConfig
from ..model.tail import TailConfig
from .state import load_state_dict_strict

FORMAT = "oat_ros.native"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _dedupe(sd: dict) -> tuple[dict, dict]:
    """Keep one name per storage view; return (tensors, {alias: canonical})."""
    tensors, aliases, seen = {}, {}, {}
    for name, t in sd.items():
        key = None
        if t.numel() > 0:
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
                   tuple(t.stride()), t.dtype, t.device)
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        tensors[name] = t.detach().contiguous()
    return tensors, aliases


def save_native(policy: OATPolicy, out_dir, source: dict | None = None, half: bool = False) -> dict:
    """Write `out_dir/model.safetensors` and `out_dir/config.yaml`; returns their paths."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    tensors, aliases = _dedupe(policy.state_dict())
    tensors = {k: v.cpu() for k, v in tensors.items()}
    if half:
        params = {name for name, _ in policy.named_parameters(remove_duplicate=False)}
        tensors = {k: v.half() if k in params and v.dtype == torch.float32 else v
                   for k, v in tensors.items()}
    weights = os.path.join(out_dir, WEIGHTS)
    config = os.path.join(out_dir, CONFIG)
    save_file(tensors, weights, metadata={"format": FORMAT, "version": str(VERSION)})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(weights, 0o666 & ~umask)  # safetensors writes 0600; a checkpoint is meant to be shared
    doc = {"format": FORMAT, "version": VERSION,
           "policy": policy.cfg.to_dict(),
           "tail": asdict(policy.tail_cfg) if policy.tail_cfg is not None else None,
           "aliases": aliases,
           "storage_dtype": "float16" if half else "float32",
           "source": source or {}}
    with open(config, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return {"weights": weights, "config": config}


def is_native(path) -> bool:
    path = os.fspath(path)
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, CONFIG))
    return os.path.basename(path) in (CONFIG, WEIGHTS)


def _paths(path) -> tuple[str, str]:
    path = os.fspath(path)
    root = path if os.path.isdir(path) else os.path.dirname(path)
    config, weights = os.path.join(root, CONFIG), os.path.join(root, WEIGHTS)
    for p in (config, weights):
        if not os.path.isfile(p):
            raise CheckpointError(f"native checkpoint file not found: {p}")
    return config, weights


def read_native_config(path) -> dict:
    config, _ = _paths(path)
    try:
        with open(config) as f:
            doc = yaml.load(f, Loader=_Loader)
    except yaml.YAMLError as e:
        raise CheckpointError(f"{config}: invalid YAML: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{config}: not an oat_ros native config (format must be '{FORMAT}')")
    if doc.get("version") != VERSION:
        raise CheckpointError(f"{config}: unsupported version {doc.get('version')} "
                              f"(this code reads version {VERSION})")
    return doc


def load_native(path, map_location="cpu") -> OATPolicy:
    """Directory (or its config.yaml / model.safetensors) -> OATPolicy (eval)."""
    config, weights = _paths(path)
    doc = read_native_config(config)
    try:
        cfg = PolicyConfig.from_dict(doc["policy"])
        tail_cfg = TailConfig(**doc["tail"]) if doc.get("tail") else None
    except (TypeError, KeyError) as e:
        raise CheckpointError(f"{config}: malformed policy/tail config: {e}") from None
    try:
        tensors = load_file(weights, device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: cannot read safetensors file: {e}") from None
    if doc.get("storage_dtype", "float32") == "float16":
        tensors = {k: v.float() if v.dtype == torch.float16 else v for k, v in tensors.items()}
    for alias, canonical in (doc.get("aliases") or {}).items():
        if canonical not in tensors:
            raise CheckpointError(f"{config}: alias {alias} -> {canonical}: "
                                  f"{canonical} is not in {weights}")
        tensors[alias] = tensors[canonical]
    policy = OATPolicy.empty(cfg, tail_cfg, device=map_location)
    # the safetensors tensors are fresh, owned copies: adopt them instead of copying again
    load_state_dict_strict(policy, tensors, weights, "policy", assign=True)
    policy.model.tie_weights()
    return policy.eval()
