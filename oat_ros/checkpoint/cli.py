"""`oat-ros-export`: convert an original OAT checkpoint (or a native one) to the native format."""
from __future__ import annotations

import argparse
import os
import sys
import time

from ..errors import OatRosError

DESCRIPTION = """\
Convert an original OAT policy checkpoint (a workspace .ckpt written by
TrainPolicyWorkspace, optionally with a Blockwise-OAT tail .pt) into the native
oat_ros format: OUT/model.safetensors + OUT/config.yaml. The native format loads
without pickle, omegaconf, hydra or dill.

The .ckpt is read through a restricted unpickler (tensors, plain containers and
OmegaConf config nodes only). EMA weights are used when the checkpoint's
cfg.training.use_ema is true, exactly like the original loader.

--policy may also be a native export (e.g. to attach a tail, or to write a
smaller copy with --storage / --inference-only)."""

EPILOG = """\
examples:
  oat-ros-export --policy ep-0500.ckpt --out exports/libero10
  oat-ros-export --policy ep-0500.ckpt --tail tail_P4.pt --out exports/libero10_bw
  oat-ros-export --policy runs/tail/export --storage int8 --inference-only \\
      --out oat_ros/assets/default_policy
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oat-ros-export", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", required=True, metavar="P.ckpt",
                   help="original OAT policy checkpoint (.ckpt) or a native export directory")
    p.add_argument("--tail", metavar="T.pt", default=None,
                   help="optional Blockwise-OAT ParallelTailDecoder checkpoint (.pt)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (created; model.safetensors + config.yaml)")
    p.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="unpickle the .ckpt with plain torch.load(weights_only=False); runs "
                        "code named in the file - only for files you trust; needs omegaconf "
                        "and dill installed")
    p.add_argument("--storage", choices=["float32", "float16", "int8"], default="float32",
                   help="how parameters are stored: float16 halves the file, int8 (one scale per "
                        "output row) quarters it; always loaded back as float32")
    p.add_argument("--inference-only", action="store_true",
                   help="leave out the tokenizer encoder (decoding never runs it; the loaded "
                        "policy cannot tokenize actions, so it cannot be trained further)")
    ema = p.add_mutually_exclusive_group()
    ema.add_argument("--ema", dest="use_ema", action="store_true", default=None,
                     help="force the EMA weights (default: cfg.training.use_ema)")
    ema.add_argument("--no-ema", dest="use_ema", action="store_false",
                     help="force the raw (non-EMA) weights")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from . import load_policy
    from .native import load_native, save_native
    try:
        t0 = time.perf_counter()
        policy = load_policy(args.policy, args.tail, use_ema=args.use_ema,
                             allow_unsafe_pickle=args.allow_unsafe_pickle)
        t_orig = time.perf_counter() - t0
        source = {"policy": os.path.abspath(args.policy),
                  "tail": os.path.abspath(args.tail) if args.tail else None}
        paths = save_native(policy, args.out, source, storage=args.storage,
                            inference_only=args.inference_only)
        t0 = time.perf_counter()
        load_native(args.out)
        t_native = time.perf_counter() - t0
    except OatRosError as e:
        print(f"oat-ros-export: error: {e}", file=sys.stderr)
        return 2
    for p in (paths["weights"], paths["config"]):
        print(f"wrote {p} ({os.path.getsize(p) / 1e6:.1f} MB)")
    print(f"load time: input {t_orig * 1e3:.0f} ms, native {t_native * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
