"""Strict state-dict loading with errors that name the file and the keys."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import CheckpointError


def _listing(keys, limit=8) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(module: nn.Module, sd: dict, source: str, what: str = "model") -> None:
    """Raise CheckpointError unless `sd` has exactly the keys and shapes of `module`."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    for k, ref in expected.items():
        got = sd.get(k)
        if got is None:
            continue
        if not torch.is_tensor(got):
            problems.append(f"key {k}: expected a tensor, got {type(got).__name__}")
        elif tuple(got.shape) != tuple(ref.shape):
            problems.append(f"shape mismatch for {k}: expected {list(ref.shape)}, "
                            f"got {list(got.shape)}")
    if problems:
        raise CheckpointError(f"{source}: the {what} state dict does not fit: " + "; ".join(problems))


def load_state_dict_strict(module: nn.Module, sd: dict, source: str, what: str = "model",
                           assign: bool = False):
    """Check, then load. assign=True adopts the given tensors (no copy; dtypes must match)."""
    check_state_dict(module, sd, source, what)
    if assign:
        for k, ref in module.state_dict().items():
            if sd[k].dtype != ref.dtype:
                raise CheckpointError(f"{source}: dtype of {k} is {sd[k].dtype}, expected {ref.dtype}")
    module.load_state_dict(sd, strict=True, assign=assign)
