"""Which policy the main job runs when no `policy_path` is given.

1. The embedded default policy (oat_ros/assets/default_policy, a native export, int8
   storage, inference-only; reproduced by `bash scripts/train_default_policy.sh`).
2. If it is missing (e.g. deleted to retrain it), a clearly labelled stand-in: the original-code fixture checkpoint of the
   LIBERO-10 shape (shared/fixtures/oat_upstream/config_A, random weights), exported once to
   the native format under .cache/. It exercises the whole graph; it cannot solve a task.

    python -m oat_ros.default_policy      # prints the path and what it is
"""
from __future__ import annotations

import lzma
import shutil
import sys
from pathlib import Path

from oat_ros.paths import DEFAULT_POLICY_DIR, PACKAGE_DIR

CACHE = PACKAGE_DIR.parent / ".cache"


def _fixture_dir() -> Path | None:
    for parent in PACKAGE_DIR.parents:
        cand = parent / "shared" / "fixtures" / "oat_upstream" / "config_A"
        if (cand / "policy.ckpt.xz").is_file():
            return cand
    return None


def resolve() -> tuple[Path | None, str]:
    """(policy path or None, a one-line description for the user)."""
    if (DEFAULT_POLICY_DIR / "config.yaml").is_file():
        return DEFAULT_POLICY_DIR, ("embedded default policy (trained on libero_object tasks 0 and 1: "
                                    f"{DEFAULT_POLICY_DIR / 'README.md'})")
    standin = CACHE / "standin_policy_A"
    if (standin / "config.yaml").is_file():
        return standin, _STANDIN
    fixture = _fixture_dir()
    if fixture is None:
        return None, "no embedded default policy and no fixture checkpoint to stand in for it"
    from oat_ros.checkpoint import load_policy, save_native
    tmp = CACHE / "standin_src"
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("policy.ckpt", "blockwise_tail_P4.pt"):
        with lzma.open(fixture / f"{name}.xz") as src, open(tmp / name, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
    save_native(load_policy(tmp / "policy.ckpt", tmp / "blockwise_tail_P4.pt"), standin,
                source={"stand_in_for": "embedded default policy", "from": str(fixture)})
    shutil.rmtree(tmp)
    return standin, _STANDIN


_STANDIN = ("STAND-IN policy: original-code fixture checkpoint (LIBERO-10 shape, random weights); "
            "it drives the graph end to end but cannot solve a task (trained default policy: issue 8)")


def main() -> int:
    path, what = resolve()
    print(f"{path}\t{what}")
    return 0 if path else 1


if __name__ == "__main__":
    sys.exit(main())
