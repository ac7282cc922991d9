"""Shared fixtures for the OAT model/checkpoint tests (import from test modules).

The upstream fixtures (written by the original OAT code) live in
shared/fixtures/oat_upstream/config_{A,B}/ (override with OAT_UPSTREAM_FIXTURES). The .xz
files are decompressed once per process into a temporary directory; loaded policies are
cached per configuration so that every test module shares them.
"""
from __future__ import annotations

import atexit
import functools
import lzma
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

CONFIGS = ["A", "B"]
FILES = ("policy.ckpt", "tokenizer.ckpt", "blockwise_tail_P4.pt")


def fixtures_root() -> Path:
    env = os.environ.get("OAT_UPSTREAM_FIXTURES")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "shared" / "fixtures" / "oat_upstream"
        if cand.is_dir():
            return cand
    return here.parents[1] / "shared" / "fixtures" / "oat_upstream"


def _require(config: str) -> Path:
    src = fixtures_root() / f"config_{config}"
    if not (src / "reference.npz").is_file():
        pytest.skip(f"OAT upstream fixtures not found at {src}")
    return src


@functools.lru_cache(maxsize=None)
def _workdir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="oat_fixtures_"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


@functools.lru_cache(maxsize=None)
def fixture_files(config: str) -> dict:
    """{'policy.ckpt': Path, 'tokenizer.ckpt': ..., 'blockwise_tail_P4.pt': ...} (decompressed)."""
    src = _require(config)
    out = _workdir() / config
    out.mkdir(exist_ok=True)
    paths = {}
    for name in FILES:
        dst = out / name
        if not dst.exists():
            with lzma.open(src / f"{name}.xz") as f, open(dst, "wb") as o:
                shutil.copyfileobj(f, o, 1 << 22)
        paths[name] = dst
    return paths


@functools.lru_cache(maxsize=None)
def reference(config: str) -> dict:
    with np.load(_require(config) / "reference.npz") as z:
        return {k: z[k] for k in z.files}


@functools.lru_cache(maxsize=None)
def loaded_policy(config: str, use_ema: bool = True, with_tail: bool = True):
    from oat_ros.checkpoint.upstream import load_upstream_policy
    files = fixture_files(config)
    tail = files["blockwise_tail_P4.pt"] if with_tail else None
    return load_upstream_policy(files["policy.ckpt"], tail, use_ema=use_ema)


@functools.lru_cache(maxsize=None)
def loaded_tokenizer(config: str, use_ema: bool = True):
    from oat_ros.checkpoint.upstream import load_upstream_tokenizer
    return load_upstream_tokenizer(fixture_files(config)["tokenizer.ckpt"], use_ema=use_ema)


def obs_inputs(policy, ref: dict) -> dict:
    keys = list(policy.cfg.cameras) + list(policy.cfg.states)
    return {k: torch.from_numpy(ref[f"in/{k}"]) for k in keys}


def t(x) -> torch.Tensor:
    return x if torch.is_tensor(x) else torch.from_numpy(np.asarray(x))


def assert_close(actual, expected, atol=1e-4, rtol=1e-4):
    torch.testing.assert_close(t(actual).float(), t(expected).float(), atol=atol, rtol=rtol)


def assert_equal(actual, expected):
    a, e = t(actual), t(expected)
    assert a.shape == e.shape and torch.equal(a, e.to(a.dtype)), f"\n{a}\n!=\n{e}"


@pytest.fixture(scope="session", params=CONFIGS)
def config_name(request):
    return request.param


@pytest.fixture(scope="session")
def ref(config_name):
    return reference(config_name)


@pytest.fixture(scope="session")
def files(config_name):
    return fixture_files(config_name)


@pytest.fixture(scope="session")
def policy(config_name):
    return loaded_policy(config_name)


@pytest.fixture(scope="session")
def obs(policy, ref):
    return obs_inputs(policy, ref)
