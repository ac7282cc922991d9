"""Policy-independent tokenizer files (what tokenizer_train exports, policy_train reads).

A native tokenizer is a directory with `tokenizer.safetensors` (the OATTokenizer state dict:
`encoder.*`, `decoder.*`, `normalizer.*`, `_dummy_variable` -- the layout of the original
tokenizer checkpoint) and `tokenizer.yaml` ({format: oat_ros.native_tokenizer, version: 1,
tokenizer: TokenizerConfig fields, source: {...}}). The same tensors end up under
`action_tokenizer.*` in every policy export, so a policy never needs this file to load.

`load_tokenizer` also accepts an original OAT `tokenizer.ckpt` and a native policy export
(its `action_tokenizer`).
"""
from __future__ import annotations

import os
from dataclasses import asdict

import yaml
from safetensors.torch import load_file, save_file

from ..checkpoint.native import readable_by_all
from ..checkpoint.state import load_state_dict_strict
from ..errors import CheckpointError
from ..model.tokenizer import OATTokenizer, TokenizerConfig

FORMAT = "oat_ros.native_tokenizer"
VERSION = 1
WEIGHTS = "tokenizer.safetensors"
CONFIG = "tokenizer.yaml"


def save_tokenizer(tok: OATTokenizer, out_dir, source: dict | None = None) -> dict:
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tok.state_dict().items()}
    weights, config = os.path.join(out_dir, WEIGHTS), os.path.join(out_dir, CONFIG)
    save_file(tensors, weights + ".tmp", metadata={"format": FORMAT, "version": str(VERSION)})
    os.replace(weights + ".tmp", weights)
    readable_by_all(weights)
    doc = {"format": FORMAT, "version": VERSION, "tokenizer": asdict(tok.cfg), "source": source or {}}
    with open(config + ".tmp", "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    os.replace(config + ".tmp", config)
    return {"weights": weights, "config": config}


def is_native_tokenizer(path) -> bool:
    path = os.fspath(path)
    root = path if os.path.isdir(path) else os.path.dirname(path)
    return os.path.isfile(os.path.join(root, CONFIG))


def load_tokenizer(path, map_location="cpu") -> OATTokenizer:
    """Native tokenizer dir / tokenizer.yaml, a native policy export, or an original
    tokenizer.ckpt -> OATTokenizer (eval mode)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"tokenizer not found: {path}")
    if is_native_tokenizer(path):
        root = path if os.path.isdir(path) else os.path.dirname(path)
        with open(os.path.join(root, CONFIG)) as f:
            doc = yaml.safe_load(f)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CheckpointError(f"{root}/{CONFIG}: not an oat_ros native tokenizer")
        if doc.get("version") != VERSION:
            raise CheckpointError(f"{root}/{CONFIG}: unsupported version {doc.get('version')}")
        tok = OATTokenizer(TokenizerConfig(**doc["tokenizer"]))
        sd = load_file(os.path.join(root, WEIGHTS), device=str(map_location))
        load_state_dict_strict(tok, sd, os.path.join(root, WEIGHTS), "tokenizer")
        return tok.to(map_location).eval()
    from ..checkpoint.native import is_native
    if is_native(path):
        from ..checkpoint import load_policy
        return load_policy(path, map_location=map_location).action_tokenizer.eval()
    from ..checkpoint.upstream import load_upstream_tokenizer
    return load_upstream_tokenizer(path, map_location=map_location)
