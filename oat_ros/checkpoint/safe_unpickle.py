"""A restricted unpickler for original OAT workspace checkpoints.

OAT saves `torch.save(payload, f, pickle_module=dill)`; the payload holds an OmegaConf
`DictConfig`. Plain `pickle` would import and run whatever the file names. This module
resolves only an allow-list of globals: torch's tensor/storage rebuild functions, a few
builtin containers, and light stand-ins for the OmegaConf classes (so neither omegaconf
nor dill has to be installed). Anything else raises `UnsafeGlobalError`.

The module itself is usable as torch.load's `pickle_module` (it exposes `Unpickler`
and `load`): `torch.load(f, pickle_module=safe_unpickle, weights_only=False)`.
"""
from __future__ import annotations

import _codecs
import collections
import pickle
import typing

import torch

OPT_IN_HINT = (
    "if you trust this file, opt in to full unpickling with "
    "allow_unsafe_pickle=True (CLI: --allow-unsafe-pickle), which uses "
    "torch.load(weights_only=False) and needs omegaconf and dill installed"
)


class UnsafeGlobalError(pickle.UnpicklingError):
    """The pickle references a global that is not on the allow-list."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name
        super().__init__(f"global '{module}.{name}' is not allowed; {OPT_IN_HINT}")


# --- OmegaConf stand-ins ----------------------------------------------------------------

class _Stub:
    """Holds the pickled __dict__ of an OmegaConf object (set by pickle's BUILD)."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected state for {type(self).__name__}")
        self.__dict__.update(state)


class DictConfigStub(_Stub):
    pass


class ListConfigStub(_Stub):
    pass


class ValueNodeStub(_Stub):
    pass


class MetadataStub(_Stub):
    pass


_OMEGACONF = {
    ("omegaconf.dictconfig", "DictConfig"): DictConfigStub,
    ("omegaconf.listconfig", "ListConfig"): ListConfigStub,
    ("omegaconf.base", "Metadata"): MetadataStub,
    ("omegaconf.base", "ContainerMetadata"): MetadataStub,
}
for _node in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode"):
    _OMEGACONF[("omegaconf.nodes", _node)] = ValueNodeStub


# --- other allowed callables ------------------------------------------------------------

_BUILTIN_TYPES = {t.__name__: t for t in (dict, list, tuple, set, frozenset, str, bytes,
                                          int, float, bool, complex, type(None))}


def _dill_load_type(name):
    """dill pickles builtin types by name; resolve only plain builtin container/scalar types."""
    if name not in _BUILTIN_TYPES:
        raise UnsafeGlobalError("dill._dill._load_type", repr(name))
    return _BUILTIN_TYPES[name]


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    """Protocol-2 pickles store bytes as _codecs.encode(str, 'latin1')."""
    if encoding.replace("-", "").lower() not in ("latin1", "utf8", "ascii"):
        raise UnsafeGlobalError("_codecs.encode", f"encoding={encoding!r}")
    return _codecs.encode(obj, encoding, errors)


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("typing", "Any"): typing.Any,
    ("dill._dill", "_load_type"): _dill_load_type,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    **{("builtins", n): t for n, t in _BUILTIN_TYPES.items() if n != "NoneType"},
    **_OMEGACONF,
}
_DTYPES = {str(d).split(".")[-1]: d for d in vars(torch).values() if isinstance(d, torch.dtype)}


class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name.endswith("Storage") and hasattr(torch, name):
            return getattr(torch, name)  # typed storage classes (torch maps them itself too)
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        raise UnsafeGlobalError(module, name)


def load(file, **kwargs):
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs):
    import io
    return load(io.BytesIO(data), **kwargs)


# --- conversion to plain python ---------------------------------------------------------

def to_plain(obj):
    """Turn OmegaConf stand-ins (or real OmegaConf objects) into nested dict/list values."""
    if isinstance(obj, DictConfigStub):
        content = obj.__dict__.get("_content")
        if not isinstance(content, dict):
            return content  # None / '???' / interpolation string
        return {k: to_plain(v) for k, v in content.items()}
    if isinstance(obj, ListConfigStub):
        content = obj.__dict__.get("_content")
        if not isinstance(content, list):
            return content
        return [to_plain(v) for v in content]
    if isinstance(obj, ValueNodeStub):
        return to_plain(obj.__dict__.get("_val"))
    if type(obj).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf  # only reachable on the opt-in path
        return OmegaConf.to_container(obj, resolve=False)
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    return obj
