"""Build modules without random initialisation (for loading: every weight comes from a file).

Random init of a LIBERO policy (two ResNet18s) costs ~0.2 s, more than reading the
weights. While a module is constructed here, the `torch.nn.init` functions are no-ops, so
parameters stay `torch.empty` until the state dict is loaded. (The meta device would avoid
the allocation too, but its first use imports torch's Python meta kernels: ~1 s.)
Not thread-safe: do not construct other modules concurrently in another thread.
"""
from __future__ import annotations

import contextlib

from torch import nn

_INIT_FUNCS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_",
               "dirac_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
               "kaiming_normal_", "orthogonal_", "sparse_")


def _no_init(tensor, *args, **kwargs):
    return tensor


@contextlib.contextmanager
def skip_init():
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCS if hasattr(nn.init, name)}
    try:
        for name in saved:
            setattr(nn.init, name, _no_init)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def empty_module(ctor, device="cpu") -> nn.Module:
    """`ctor()` with uninitialised parameters, moved to `device`."""
    with skip_init():
        module = ctor()
    return module.to(device)
