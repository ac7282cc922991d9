"""Pickle-free native format: a directory with `model.safetensors` + `config.yaml`.

config.yaml holds the PolicyConfig, the tail config (or null) and the alias table: tensors
that share storage in the module (tied `model.head.weight` = `model.tok_emb.weight`, the
robomimic `backbone.*` = `nets.0.*` duplicates) are stored once and re-expanded on load,
so a round trip is bit-exact.

Storage (`save_native(..., storage=...)`, `storage_dtype` in config.yaml), for the policy shipped
inside the package: `float16` stores the float32 *parameters* as float16; `int8` stores every
weight matrix / conv kernel as int8 with one float16 scale per output row (symmetric, absmax)
and the other parameters as float16. Buffers (normalizer statistics) always stay float32.
Loading turns everything back into float32. `inference_only=True` leaves out the tokenizer's
encoder, which decoding never runs (the loaded tokenizer then refuses to tokenize).
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


def readable_by_all(*paths) -> None:
    """safetensors writes 0600 files; give them the usual umask-based mode (0644) so an
    installed/shared checkpoint can be read by a node running as another user."""
    mask = os.umask(0)
    os.umask(mask)
    for p in paths:
        if os.path.isfile(p):
            os.chmod(p, 0o666 & ~mask)


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


STORAGE = ("float32", "float16", "int8")
SCALE = ".int8_scale"                       # suffix of the per-row scale of an int8 tensor
ENCODER = "action_tokenizer.encoder."        # what an inference-only export leaves out


def _store(tensors: dict, params: set, storage: str) -> dict:
    out = {}
    for k, v in tensors.items():
        if k not in params or v.dtype != torch.float32 or storage == "float32":
            out[k] = v
        elif storage == "int8" and v.dim() >= 2:
            rows = v.reshape(v.shape[0], -1)
            scale = (rows.abs().amax(dim=1) / 127.0).half().clamp_min(2 ** -24)  # > 0 in float16
            out[k] = torch.round(rows / scale.float()[:, None]).clamp(-127, 127).to(torch.int8).reshape(v.shape)
            out[k + SCALE] = scale
        else:
            out[k] = v.half()
    return out


def _restore(tensors: dict) -> dict:
    out = {}
    for k, v in tensors.items():
        if k.endswith(SCALE):
            continue
        if v.dtype == torch.int8:
            if k + SCALE not in tensors:
                raise CheckpointError(f"int8 tensor {k} has no {k + SCALE}")
            scale = tensors[k + SCALE].float().view(-1, *([1] * (v.dim() - 1)))
            v = v.float() * scale
        elif v.dtype == torch.float16:
            v = v.float()
        out[k] = v
    return out


def save_native(policy: OATPolicy, out_dir, source: dict | None = None, storage: str = "float32",
                inference_only: bool = False) -> dict:
    """Write `out_dir/model.safetensors` and `out_dir/config.yaml`; returns their paths."""
    if storage not in STORAGE:
        raise ValueError(f"storage must be one of {STORAGE}, not {storage!r}")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    tensors, aliases = _dedupe(policy.state_dict())
    tensors = {k: v.cpu() for k, v in tensors.items() if not (inference_only and k.startswith(ENCODER))}
    aliases = {a: c for a, c in aliases.items() if not (inference_only and a.startswith(ENCODER))}
    params = {name for name, _ in policy.named_parameters(remove_duplicate=False)}
    tensors = _store(tensors, params, storage)
    weights = os.path.join(out_dir, WEIGHTS)
    config = os.path.join(out_dir, CONFIG)
    save_file(tensors, weights, metadata={"format": FORMAT, "version": str(VERSION)})
    readable_by_all(weights)
    doc = {"format": FORMAT, "version": VERSION,
           "policy": policy.cfg.to_dict(),
           "tail": asdict(policy.tail_cfg) if policy.tail_cfg is not None else None,
           "aliases": aliases,
           "storage_dtype": storage,
           "inference_only": bool(inference_only),
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
    if doc.get("storage_dtype", "float32") not in STORAGE:
        raise CheckpointError(f"{config}: unknown storage_dtype {doc.get('storage_dtype')!r} "
                              f"(this code reads {', '.join(STORAGE)})")
    tensors = _restore(tensors)
    for alias, canonical in (doc.get("aliases") or {}).items():
        if canonical not in tensors:
            raise CheckpointError(f"{config}: alias {alias} -> {canonical}: "
                                  f"{canonical} is not in {weights}")
        tensors[alias] = tensors[canonical]
    policy = OATPolicy.empty(cfg, tail_cfg, device=map_location)
    if doc.get("inference_only"):  # no encoder weights shipped: zeros, and tokenize() refuses
        for k, v in policy.state_dict().items():
            if k.startswith(ENCODER):
                tensors.setdefault(k, torch.zeros_like(v))
        policy.action_tokenizer.encoder_dropped = True
    # the safetensors tensors are fresh, owned copies: adopt them instead of copying again
    load_state_dict_strict(policy, tensors, weights, "policy", assign=True)
    policy.model.tie_weights()
    return policy.eval()
