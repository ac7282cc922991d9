"""Load time: original OAT checkpoint (.ckpt) vs the native export, side by side (JSON out).

Each sample runs in a fresh Python process (imports excluded from the timing, so one-time
lazy initialisation inside torch counts, as it would for a node starting up); the median
of --repeat samples is reported. Also reported, in-process after a warm-up: the bare
`torch.load` of the payload (the step the original loader pays as well, here through the
restricted unpickler without mmap).

    python bench/bench_load.py                      # fixture config A (decompressed to a temp dir)
    python bench/bench_load.py --policy P.ckpt [--tail T.pt]
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "oat_upstream" / "config_A"

CHILD = r"""
import sys, time, json
sys.path.insert(0, {root!r})
import torch
from oat_ros.checkpoint import load_policy
t0 = time.perf_counter()
p = load_policy({path!r}, {tail!r})
dt = time.perf_counter() - t0
print(json.dumps({{"seconds": dt, "params": sum(x.numel() for x in p.parameters())}}))
"""


def _decompress(src: Path, dst: Path) -> Path:
    with lzma.open(src) as f, open(dst, "wb") as o:
        shutil.copyfileobj(f, o, 1 << 22)
    return dst


def _child(path, tail) -> dict:
    code = CHILD.format(root=str(ROOT), path=str(path), tail=None if tail is None else str(tail))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(xs):
    return round(statistics.median(xs) * 1e3, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, default=None)
    ap.add_argument("--tail", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import torch
    from oat_ros.checkpoint import safe_unpickle
    from oat_ros.checkpoint.native import save_native
    from oat_ros.checkpoint.upstream import load_upstream_policy

    work = Path(tempfile.mkdtemp(prefix="bench_load_"))
    try:
        policy_path, tail_path = args.policy, args.tail
        if policy_path is None:
            policy_path = _decompress(FIXTURE / "policy.ckpt.xz", work / "policy.ckpt")
            tail_path = _decompress(FIXTURE / "blockwise_tail_P4.pt.xz", work / "tail.pt")
        native_dir = work / "native"
        save_native(load_upstream_policy(policy_path, tail_path), native_dir)

        # warm the page cache for both files so the comparison is about parsing, not disk
        for p in (policy_path, native_dir / "model.safetensors"):
            Path(p).read_bytes()

        original, native = [], []
        for _ in range(args.repeat):  # interleaved, so background load hits both alike
            original.append(_child(policy_path, tail_path)["seconds"])
            native.append(_child(native_dir, None)["seconds"])

        raw = []
        torch.load(policy_path, pickle_module=safe_unpickle, weights_only=False)
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            torch.load(policy_path, pickle_module=safe_unpickle, weights_only=False)
            raw.append(time.perf_counter() - t0)

        size = lambda p: round(os.path.getsize(p) / 1e6, 1)
        result = {
            "benchmark": "checkpoint load time (load_policy call, fresh process, median)",
            "policy": str(policy_path), "tail": None if tail_path is None else str(tail_path),
            "repeat": args.repeat,
            "original_ckpt_ms": _median(original),
            "native_ms": _median(native),
            "speedup": round(statistics.median(original) / statistics.median(native), 2),
            "original_samples_ms": [round(x * 1e3, 1) for x in original],
            "native_samples_ms": [round(x * 1e3, 1) for x in native],
            "torch_load_payload_only_ms": _median(raw),
            "sizes_mb": {"original_ckpt": size(policy_path),
                         "original_tail": None if tail_path is None else size(tail_path),
                         "native_safetensors": size(native_dir / "model.safetensors")},
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
