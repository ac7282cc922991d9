"""oat-ros-eval-run: run the sim graph over tasks x init states x decode settings, one bag per run.

The work list is cut into runs of (decode setting, suite, task): each run starts the whole graph
(recorder + policy node + sim bridge, `oat-ros-bringup sim --main-job`) with an episode plan over
the init states, and leaves its bag in OUT/runs/<setting>/<suite>-t<task>/bag. A run whose bag
holds an END for every planned episode is complete and skipped when the command is run again,
so an interrupted evaluation resumes where it stopped; an incomplete run is redone from scratch.
At the end, one report per setting and a paired comparison of the first setting against each
other one are written from the bags alone (OUT/reports/).

    oat-ros-eval-run --suite libero_object --tasks 0-9 --init-states 0-4 \\
        --setting ar:K=8 --setting ar:K=4 --setting blockwise:P=4:r=1 --out runs/eval
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

SETTING_KEYS = {"K": "max_tokens", "P": "prefix_len", "r": "refine_iters", "deadline": "deadline_ms",
                "T": "temperature", "topk": "top_k", "seed": "seed"}


@dataclass(frozen=True)
class DecodeSetting:
    label: str                 # e.g. "ar-K8", used in paths and reports
    params: tuple              # ((policy_node parameter, value), ...)

    @classmethod
    def parse(cls, text: str) -> "DecodeSetting":
        """'ar:K=4' / 'blockwise:P=4:r=1' / 'ar:K=8:deadline=40' -> policy_node parameters."""
        mode, *parts = text.split(":")
        if mode not in ("ar", "blockwise"):
            raise ValueError(f"--setting {text!r}: mode must be ar or blockwise")
        params = [("decode_mode", mode)]
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep or key not in SETTING_KEYS:
                raise ValueError(f"--setting {text!r}: '{part}' is not KEY=VALUE with KEY in {sorted(SETTING_KEYS)}")
            params.append((SETTING_KEYS[key], value))
        return cls(mode + "".join(f"-{p.replace('=', '')}" for p in parts), tuple(params))


@dataclass(frozen=True)
class Run:
    setting: DecodeSetting
    suite: str
    task_index: int
    init_states: tuple
    max_steps: int

    @property
    def name(self) -> str:
        return f"{self.setting.label}/{self.suite}-t{self.task_index:02d}"


def parse_range(text: str) -> list[int]:
    """'0-4,7' -> [0, 1, 2, 3, 4, 7]"""
    out = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    return out


def work_list(settings, suite, tasks, init_states, max_steps) -> list[Run]:
    return [Run(s, suite, t, tuple(init_states), max_steps) for s in settings for t in tasks]


def run_dir(out: Path, run: Run) -> Path:
    return out / "runs" / run.name


def is_complete(out: Path, run: Run) -> bool:
    """The run's bag is finalized and has an END for every planned episode."""
    from oat_ros.eval import bags as bagio
    bag = run_dir(out, run) / "bag"
    found = bagio.find_bags(bag) if bag.exists() else []
    if not found or any(bagio.needs_repair(b) for b in found):
        return False
    try:
        data = bagio.load([bag], repair=False)
    except Exception:
        return False
    return sum(e.completed for e in data.episodes) >= len(run.init_states)


def bringup_command(out: Path, run: Run, policy: str | None, extra: list[str]) -> list[str]:
    sets = [f"sim_bridge.suite={run.suite}", f"sim_bridge.task_indices=[{run.task_index}]",
            f"sim_bridge.init_states=[{','.join(map(str, run.init_states))}]",
            f"sim_bridge.num_episodes={len(run.init_states)}",
            f"sim_bridge.max_steps={run.max_steps}", "sim_bridge.exit_when_done=true",
            f"sim_bridge.run_id={run.name.replace('/', '_')}"]
    sets += [f"policy_node.{k}={v}" for k, v in run.setting.params]
    if policy:
        sets.append(f"policy_node.policy_path={policy}")
    cmd = [sys.executable, "-m", "oat_ros.ros.bringup", "sim", "--main-job", "--run-dir", str(run_dir(out, run))]
    for s in sets + list(extra):
        cmd += ["--set", s]
    return cmd


def execute(out: Path, run: Run, policy: str | None, extra: list[str], timeout: float) -> tuple[bool, str]:
    """Run one graph to completion (a previous incomplete attempt is removed first)."""
    d = run_dir(out, run)
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    with open(d / "bringup.log", "wb") as log:
        try:
            rc = subprocess.run(bringup_command(out, run, policy, extra), stdout=log, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout:.0f} s"
    if not is_complete(out, run):
        return False, f"exit code {rc}, bag incomplete (see {d / 'bringup.log'})"
    return True, ""


def write_reports(out: Path, settings: list[DecodeSetting]):
    from oat_ros.eval import cli
    reports = out / "reports"
    bags = {s.label: sorted((out / "runs" / s.label).glob("*/bag")) for s in settings}  # dirs holding bags
    for label, paths in bags.items():
        if paths:
            cli.main(["report", *map(str, paths), "--out", str(reports / label), "--title", f"OAT evaluation: {label}"])
    first = settings[0].label
    for other in settings[1:]:
        if bags[first] and bags[other.label]:
            cli.main(["compare", "--a", *map(str, bags[first]), "--b", *map(str, bags[other.label]),
                      "--label-a", first, "--label-b", other.label,
                      "--out", str(reports / f"{first}_vs_{other.label}")])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oat-ros-eval-run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--tasks", default="0", help="task indices, e.g. 0-9 or 0,3,5 (default 0)")
    p.add_argument("--init-states", default="0-4", help="init-state indices per task (default 0-4)")
    p.add_argument("--setting", action="append", default=[], metavar="MODE[:KEY=VALUE...]",
                   help="decode setting, repeatable: ar:K=8, ar:K=4, blockwise:P=4:r=1, ar:K=8:deadline=40 "
                        f"(keys: {', '.join(SETTING_KEYS)}); default ar:K=8")
    p.add_argument("--max-steps", type=int, default=0, help="per episode; 0 = the suite's default")
    p.add_argument("--policy", help="policy_node.policy_path (default: the embedded default policy)")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="any other parameter for every run (passed to oat-ros-bringup)")
    p.add_argument("--out", type=Path, required=True, help="output directory (runs/ and reports/)")
    p.add_argument("--timeout", type=float, default=3600.0, help="per run, seconds")
    p.add_argument("--limit", type=int, default=0, help="run at most this many pending runs, then stop")
    p.add_argument("--no-reports", action="store_true", help="skip the reports at the end")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = [DecodeSetting.parse(s) for s in (args.setting or ["ar:K=8"])]
    except ValueError as e:
        raise SystemExit(str(e))
    runs = work_list(settings, args.suite, parse_range(args.tasks), parse_range(args.init_states), args.max_steps)
    args.out.mkdir(parents=True, exist_ok=True)
    done = [r for r in runs if is_complete(args.out, r)]
    pending = [r for r in runs if r not in done]
    if args.limit:
        pending = pending[:args.limit]
    print(f"[eval-run] {len(runs)} runs ({len(done)} already complete, {len(pending)} to run)", flush=True)
    failed = []
    bar = tqdm(pending, desc="runs", unit="run")
    for run in bar:
        bar.set_postfix_str(run.name)
        t0 = time.monotonic()
        ok, why = execute(args.out, run, args.policy, args.set, args.timeout)
        if ok:
            tqdm.write(f"[eval-run] {run.name}: done in {time.monotonic() - t0:.0f} s")
        else:
            failed.append((run, why))
            tqdm.write(f"[eval-run] {run.name}: FAILED: {why}")
    if not args.no_reports:
        write_reports(args.out, settings)
        print(f"[eval-run] reports in {args.out / 'reports'}")
    for run, why in failed:
        print(f"[eval-run] failed: {run.name}: {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
