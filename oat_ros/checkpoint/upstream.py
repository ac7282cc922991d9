"""Load checkpoints written by the original OAT code (no omegaconf, hydra or dill needed).

A workspace checkpoint is `{'cfg', 'state_dicts': {'model', 'ema_model', 'optimizer'},
'pickles'}`. Every hyperparameter comes from its `cfg`; the weights used are `ema_model`
when `cfg.training.use_ema` (as the original `from_checkpoint`). The tokenizer is built
from the policy's own `action_tokenizer.*` tensors: the tokenizer checkpoint named in the
cfg is only read (for its cfg) when it exists, since its architecture is otherwise inferred
from tensor shapes (the head count is not in the weights: OAT configs use 4 heads).
"""
from __future__ import annotations

import os
import pickle
import re

import torch

from ..errors import CheckpointError
from ..model.empty import empty_module
from ..model.normalizer import normalizer_fields
from ..model.policy import OATPolicy, PolicyConfig
from ..model.tail import ParallelTailDecoder, TailConfig
from ..model.tokenizer import OATTokenizer, TokenizerConfig
from . import safe_unpickle
from .state import load_state_dict_strict

TOKENIZER_PREFIX = "action_tokenizer."
DEFAULT_TOKENIZER_HEADS = 4
_MISSING = object()


# --- reading files ----------------------------------------------------------------------

def _check_file(path) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    return path


def read_payload(path, allow_unsafe_pickle: bool = False, map_location="cpu") -> dict:
    """torch.load an original workspace checkpoint through the restricted unpickler.

    On CPU the zip is memory-mapped: only the tensors that are used get read.
    """
    path = _check_file(path)
    try:
        if allow_unsafe_pickle:
            payload = torch.load(path, map_location=map_location, weights_only=False)
        else:
            payload = torch.load(path, map_location=map_location, weights_only=False,
                                 pickle_module=safe_unpickle,
                                 mmap=str(map_location) == "cpu" and _can_mmap(path))
    except safe_unpickle.UnsafeGlobalError as e:
        raise CheckpointError(f"{path}: refusing to unpickle global '{e.module}.{e.name}' "
                              f"(not on the allow-list); {safe_unpickle.OPT_IN_HINT}") from None
    except ModuleNotFoundError as e:
        raise CheckpointError(
            f"{path}: allow_unsafe_pickle=True unpickles with the real classes, but module "
            f"'{e.name}' is not installed (OAT checkpoints need omegaconf and dill); install "
            f"it or load without the opt-in (restricted unpickler)") from None
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError/... on bad files
        raise CheckpointError(f"{path}: cannot read checkpoint (not a torch file, truncated or "
                              f"corrupt): {type(e).__name__}: {e}") from None
    return payload


def _device(map_location):
    return map_location if isinstance(map_location, (str, torch.device)) else "cpu"


def _can_mmap(path: str) -> bool:
    import zipfile
    return zipfile.is_zipfile(path)


def _workspace_parts(payload, path: str):
    if not isinstance(payload, dict) or not {"cfg", "state_dicts"} <= set(payload):
        got = sorted(map(str, payload))[:8] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: not an OAT workspace checkpoint (expected a dict with "
                              f"'cfg' and 'state_dicts', got {got})")
    cfg = safe_unpickle.to_plain(payload["cfg"])
    sds = payload["state_dicts"]
    if not isinstance(cfg, dict) or not isinstance(sds, dict):
        raise CheckpointError(f"{path}: not an OAT workspace checkpoint (malformed cfg/state_dicts)")
    return cfg, sds


def _get(cfg: dict, dotted: str, path: str, default=_MISSING):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise CheckpointError(f"{path}: cfg key '{dotted}' is missing")
        node = node[part]
    return node


def _select_weights(cfg: dict, sds: dict, path: str, use_ema) -> dict:
    if use_ema is None:
        use_ema = bool(_get(cfg, "training.use_ema", path, default=False))
    name = "ema_model" if use_ema else "model"
    sd = sds.get(name)
    if not isinstance(sd, dict) or not sd:
        raise CheckpointError(f"{path}: state_dicts['{name}'] is missing or empty "
                              f"(use_ema={use_ema})")
    return sd


# --- configs ----------------------------------------------------------------------------

def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    idx = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    return max(idx) + 1 if idx else 0


def tokenizer_config(sd: dict, path: str, prefix: str = "", tok_cfg: dict | None = None):
    """TokenizerConfig from tokenizer tensors (+ the tokenizer cfg when one is available)."""
    def shape(key):
        if prefix + key not in sd:
            raise CheckpointError(f"{path}: tokenizer tensor '{prefix + key}' is missing")
        return tuple(sd[prefix + key].shape)

    R, E = shape("encoder.registers")
    enc = (tok_cfg or {}).get("encoder", {})
    dec = (tok_cfg or {}).get("decoder", {})
    levels = (tok_cfg or {}).get("quantizer", {}).get("levels")
    latent_dim = shape("encoder.head.proj.weight")[0]
    if levels is None:
        if latent_dim != 4:
            raise CheckpointError(f"{path}: FSQ levels are not in the cfg and latent_dim is "
                                  f"{latent_dim} (only the default [8,5,5,5] can be inferred)")
        levels = [8, 5, 5, 5]
    head_dim = enc.get("head_dim", E // DEFAULT_TOKENIZER_HEADS)
    if dec.get("head_dim", head_dim) != head_dim:
        raise CheckpointError(f"{path}: tokenizer encoder/decoder head_dim differ (unsupported)")
    return TokenizerConfig(
        sample_dim=shape("encoder.sample_emb.patch_proj.weight")[1],
        sample_horizon=shape("encoder.pos_emb.posembs")[2],
        emb_dim=E, head_dim=int(head_dim),
        enc_depth=_count(sd, re.escape(prefix) + r"encoder\.transformer\.blocks\.(\d+)\."),
        enc_mlp_hidden=shape("encoder.transformer.blocks.0.mlp.fc1.weight")[0],
        num_registers=R,
        dec_depth=_count(sd, re.escape(prefix) + r"decoder\.decoder\.layers\.(\d+)\."),
        dec_ff_dim=shape("decoder.decoder.layers.0.linear1.weight")[0],
        latent_horizon=shape("decoder.latent_pos_emb.posembs")[2],
        levels=[int(v) for v in levels])


def policy_config(cfg: dict, sd: dict, path: str, tok_cfg: dict | None = None) -> PolicyConfig:
    pcfg = _get(cfg, "policy", path)
    shape_meta = pcfg.get("shape_meta") or _get(cfg, "shape_meta", path)
    cams, states = {}, {}
    for key, meta in _get(shape_meta, "obs", path).items():
        kind = meta.get("type", "low_dim")
        if kind == "rgb":
            cams[key] = [int(v) for v in meta["shape"]]
        elif kind in ("state", "low_dim"):
            states[key] = int(meta["shape"][0])
        else:
            raise CheckpointError(f"{path}: obs '{key}' has unsupported type '{kind}'")
    venc = _get(pcfg, "obs_encoder.vision_encoder", path, default={}) or {}
    if not venc.get("use_group_norm", True) or venc.get("share_rgb_model", False):
        raise CheckpointError(f"{path}: only use_group_norm=True, share_rgb_model=False "
                              f"vision encoders are supported")
    if _get(pcfg, "obs_encoder.state_encoder.out_dim", path, default=None) is not None:
        raise CheckpointError(f"{path}: state_encoder.out_dim must be null (identity)")
    if pcfg.get("use_dense_visual_memory"):
        raise CheckpointError(f"{path}: use_dense_visual_memory=True is not supported")
    crop = venc.get("crop_shape")
    if crop is None:
        shapes = {tuple(s[:2]) for s in cams.values()}
        if len(shapes) > 1:
            raise CheckpointError(f"{path}: crop_shape is null and cameras differ in size")
        crop = list(shapes.pop()) if shapes else [0, 0]

    def hp(name):
        value = pcfg.get(name, cfg.get(name, _MISSING))
        if value is _MISSING:
            raise CheckpointError(f"{path}: cfg key 'policy.{name}' is missing")
        return value

    tok = tokenizer_config(sd, path, TOKENIZER_PREFIX, tok_cfg)
    runner = _get(cfg, "task.policy.env_runner", path, default={}) or {}
    task = {"task_name": cfg.get("task_name"),
            **{k: runner[k] for k in ("camera_names", "state_ports", "image_size",
                                      "max_episode_steps", "fps") if k in runner}}
    top_k = pcfg.get("topk")
    pc = PolicyConfig(
        cameras=cams, states=states, crop_shape=[int(v) for v in crop],
        action_dim=int(_get(shape_meta, "action.shape", path)[0]),
        horizon=int(hp("horizon")), n_action_steps=int(hp("n_action_steps")),
        n_obs_steps=int(hp("n_obs_steps")),
        embed_dim=int(hp("embed_dim")), n_layers=int(hp("n_layers")), n_heads=int(hp("n_heads")),
        vocab_size=int(sd["model.tok_emb.weight"].shape[0]) if "model.tok_emb.weight" in sd
        else tok.vocab_size + 1,
        max_seq_len=tok.latent_horizon + 1,
        temperature=float(pcfg.get("temperature", 1.0)),
        top_k=None if top_k is None else int(top_k),
        tokenizer=tok,
        vision_normalizer_fields=normalizer_fields(sd, "obs_encoder.vision_encoder.normalizer."),
        state_normalizer_fields=normalizer_fields(sd, "obs_encoder.state_encoder.normalizer."),
        task=task)
    try:
        pc.validate()
    except Exception as e:
        raise CheckpointError(f"{path}: inconsistent policy cfg: {e}") from None
    return pc


def _tokenizer_cfg_for(cfg: dict, path: str, tokenizer_path, allow_unsafe_pickle) -> dict | None:
    """The tokenizer cfg from the tokenizer checkpoint, when it can be found."""
    if tokenizer_path is None:
        named = _get(cfg, "policy.action_tokenizer.checkpoint", path, default=None)
        if not named:
            return None
        candidates = [named, os.path.join(os.path.dirname(path), named)]
        tokenizer_path = next((c for c in candidates if os.path.isfile(c)), None)
        if tokenizer_path is None:
            return None
    tcfg, _ = _workspace_parts(read_payload(tokenizer_path, allow_unsafe_pickle), tokenizer_path)
    if "tokenizer" not in tcfg:
        raise CheckpointError(f"{tokenizer_path}: not a tokenizer checkpoint (no cfg.tokenizer)")
    return tcfg["tokenizer"]


# --- public API -------------------------------------------------------------------------

def policy_from_payload(payload: dict, path: str = "<payload>", *, use_ema=None,
                        tokenizer_cfg: dict | None = None, map_location="cpu") -> OATPolicy:
    cfg, sds = _workspace_parts(payload, path)
    if "policy" not in cfg:
        kind = "a tokenizer checkpoint" if "tokenizer" in cfg else "not a policy checkpoint"
        raise CheckpointError(f"{path}: {kind} (cfg has no 'policy'); expected an OAT policy "
                              f"checkpoint (train_oatpolicy)")
    sd = dict(_select_weights(cfg, sds, path, use_ema))
    sd.pop("model.memory_pos_emb", None)  # Blockwise/dense branch extra, unused when dense memory is off
    policy = OATPolicy.empty(policy_config(cfg, sd, path, tokenizer_cfg), device=_device(map_location))
    load_state_dict_strict(policy, sd, path, "policy")
    return policy.eval()


def load_upstream_policy(policy_path, tail_path=None, *, use_ema=None,
                         allow_unsafe_pickle: bool = False, map_location="cpu",
                         tokenizer_path=None) -> OATPolicy:
    """Original OAT policy checkpoint (+ optional Blockwise tail .pt) -> OATPolicy (eval)."""
    path = os.fspath(policy_path)
    payload = read_payload(path, allow_unsafe_pickle)  # CPU; weights are copied to the device
    cfg, _ = _workspace_parts(payload, path)
    tok_cfg = _tokenizer_cfg_for(cfg, path, tokenizer_path, allow_unsafe_pickle) if "policy" in cfg else None
    policy = policy_from_payload(payload, path, use_ema=use_ema, tokenizer_cfg=tok_cfg,
                                 map_location=map_location)
    del payload
    if tail_path is not None:
        load_tail(tail_path, policy, map_location)
    return policy


def load_upstream_tokenizer(path, *, use_ema=None, allow_unsafe_pickle: bool = False,
                            map_location="cpu") -> OATTokenizer:
    path = os.fspath(path)
    cfg, sds = _workspace_parts(read_payload(path, allow_unsafe_pickle), path)
    if "tokenizer" not in cfg:
        raise CheckpointError(f"{path}: not a tokenizer checkpoint (cfg has no 'tokenizer')")
    sd = _select_weights(cfg, sds, path, use_ema)
    tcfg = tokenizer_config(sd, path, "", cfg["tokenizer"])
    tok = empty_module(lambda: OATTokenizer(tcfg), _device(map_location))
    load_state_dict_strict(tok, sd, path, "tokenizer")
    return tok.eval()


def load_tail(tail_path, policy: OATPolicy, map_location="cpu") -> ParallelTailDecoder:
    """Blockwise tail `.pt` (plain torch.save, loaded with weights_only=True) -> attached."""
    path = _check_file(tail_path)
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read tail checkpoint (weights_only load failed: "
                              f"{type(e).__name__}: {e})") from None
    required = ("prefix_len", "state_dict", "tail_heads")
    if not isinstance(blob, dict) or any(k not in blob for k in required):
        raise CheckpointError(f"{path}: not a Blockwise-OAT tail checkpoint (expected keys "
                              f"{list(required)})")
    sd = blob["state_dict"]
    if "tail_pos_emb" not in sd or "head.weight" not in sd:
        raise CheckpointError(f"{path}: tail state dict lacks tail_pos_emb/head.weight")
    if sd["tail_pos_emb"].dim() != 3 or sd["head.weight"].dim() != 2:
        raise CheckpointError(f"{path}: tail_pos_emb/head.weight have unexpected ranks")
    _, n_tail, d = sd["tail_pos_emb"].shape
    vocab = sd["head.weight"].shape[0]
    pc = policy.cfg
    if d != pc.embed_dim:
        raise CheckpointError(f"{path}: tail d_model {d} does not fit the policy "
                              f"(embed_dim {pc.embed_dim})")
    if vocab != pc.vocab_size:
        raise CheckpointError(f"{path}: tail vocab {vocab} does not fit the policy "
                              f"(vocab {pc.vocab_size})")
    P = int(blob["prefix_len"])
    if P + n_tail != pc.n_tokens:
        raise CheckpointError(f"{path}: prefix_len {P} + tail length {n_tail} != {pc.n_tokens}")
    heads = int(blob["tail_heads"])
    if heads <= 0 or d % heads:
        raise CheckpointError(f"{path}: tail_heads {heads} does not divide d_model {d}")
    n_layers = _count(sd, r"blocks\.(\d+)\.")
    if "tail_layers" in blob and int(blob["tail_layers"]) != n_layers:
        raise CheckpointError(f"{path}: tail_layers {blob['tail_layers']} but the state dict "
                              f"has {n_layers} blocks")
    tcfg = TailConfig(prefix_len=P, n_tail=int(n_tail), n_layers=n_layers, n_heads=heads,
                      refine_iters=int(blob.get("refine_iters", 1)))
    device = policy._dummy_variable.device
    tail = empty_module(lambda: ParallelTailDecoder(pc.vocab_size, d, tcfg.n_tail, n_layers, heads),
                        device)
    load_state_dict_strict(tail, sd, path, "tail")
    policy.attach_tail(tail.eval(), tcfg)
    return tail
