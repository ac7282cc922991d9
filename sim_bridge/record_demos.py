"""Record scripted-expert demonstrations of LIBERO tasks in the LIBERO hdf5 layout.

    python -m sim_bridge.record_demos --suite libero_object --tasks 0,1,2 \\
        --episodes-per-task 10 --init-states 0-49 --out data/demos/ [--no-images] \\
        [--image-size 128]
    python -m sim_bridge.record_demos --measure-only --suite libero_goal --tasks 0,1,7 \\
        --init-states 0-2 --summary sim_bridge/expert_success.json

Per task, init states are tried in the given order until `--episodes-per-task` successful
episodes are recorded (or the list is exhausted). Each episode: `reset(init)`, 10 settle
steps of `[0]*6+[-1]`, then the scripted expert (sim_bridge/expert.py) without rendering;
a successful episode's actions are then replayed from the same reset with the cameras on
and recorded (only if the replay succeeds too, which it does: LIBERO is deterministic), so
no rendering time is spent on failures. Only successful episodes are written, one file per
task, named like LIBERO's: `<out>/<task name>_demo.hdf5` (layout: sim_bridge/demo_writer.py).

Resumable: a task's file is written as `<name>_demo.hdf5.part` (flushed after every episode,
with the attempted init states in its attributes) and renamed when the task is done; a
rerun skips tasks whose final file exists (`--overwrite` redoes them) and continues `.part`
files. `<out>/summary.json` (or `--summary`) gets the expert's statistics per task:
attempts, successes, success rate, mean steps of the successes, demos written.

`--measure-only` writes no hdf5 and runs every listed init state (success-rate measurement).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

EXPERT_VERSION = "1"


# ---------------------------------------------------------------------------------------
# argument helpers
# ---------------------------------------------------------------------------------------
def parse_index_list(text: str, upper: int | None = None) -> list:
    """'0-4,7,9-10' -> [0, 1, 2, 3, 4, 7, 9, 10] (order kept, duplicates dropped);
    'all' -> range(upper)."""
    text = str(text).strip()
    if text in ("", "all"):
        if upper is None:
            raise ValueError("'all' needs an upper bound")
        return list(range(upper))
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = (int(x) for x in part.split("-", 1))
            if b < a:
                raise ValueError(f"bad range '{part}'")
            vals = range(a, b + 1)
        else:
            vals = [int(part)]
        for v in vals:
            if upper is not None and not 0 <= v < upper:
                raise ValueError(f"index {v} not in [0, {upper - 1}]")
            if v not in out:
                out.append(v)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="record_demos",
        description="Record scripted-expert LIBERO demonstrations (successful episodes only) "
                    "in the LIBERO hdf5 layout, one <task name>_demo.hdf5 per task.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--suite", default="libero_object",
                   choices=["libero_spatial", "libero_object", "libero_goal", "libero_10",
                            "libero_90"])
    p.add_argument("--tasks", default="all", help="task indices: 'all' or e.g. '0,1,5-7'")
    p.add_argument("--episodes-per-task", type=int, default=10,
                   help="successful demos to record per task")
    p.add_argument("--init-states", default="0-49",
                   help="benchmark init states to try, in order, e.g. '0-49' or '3,5'")
    p.add_argument("--out", default="data/demos/", help="output directory")
    p.add_argument("--no-images", action="store_true",
                   help="no camera images (no rendering; files lack obs/*_rgb)")
    p.add_argument("--image-size", type=int, default=128, help="camera height = width")
    p.add_argument("--max-steps", type=int, default=600,
                   help="expert step limit per episode (after the settle steps)")
    p.add_argument("--settle-steps", type=int, default=10,
                   help="no-op steps [0]*6+[-1] after the reset (not recorded)")
    p.add_argument("--summary", default=None,
                   help="JSON summary path (default: <out>/summary.json)")
    p.add_argument("--measure-only", action="store_true",
                   help="only run the expert (no rendering, no hdf5) on every init state")
    p.add_argument("--overwrite", action="store_true", help="redo tasks whose file exists")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--verbose", action="store_true", help="print the expert's log")
    return p


# ---------------------------------------------------------------------------------------
# episodes
# ---------------------------------------------------------------------------------------
def _settle(le, n):
    from sim_bridge.libero_env import SETTLE_ACTION
    for _ in range(int(n)):
        le.step(SETTLE_ACTION)


def run_expert(le, init_state: int, max_steps: int = 600, settle_steps: int = 10,
               verbose: bool = False) -> dict:
    """One expert episode without rendering on the loaded task of `le` (a LiberoEnv).
    Returns {success, steps, actions (T,7), log}; actions end at the first success."""
    from sim_bridge.expert import ScriptedExpert
    le.reset(init_state)
    _settle(le, settle_steps)
    expert = ScriptedExpert(le.env, max_steps=max_steps, verbose=verbose)
    expert.reset()
    actions, success = [], False
    while expert.active:
        a = expert.act()
        actions.append(a)
        _, success = le.step(a, render=False)
        if success:
            break
    return {"success": bool(success), "steps": len(actions),
            "actions": np.array(actions, dtype=np.float64).reshape(-1, 7), "log": expert.log}


def gripper_action_state(le):
    """robosuite's stateful gripper command (not part of the MuJoCo state)."""
    return np.array(le.env.env.robots[0].gripper.current_action, dtype=np.float64).copy()


def record_replay(le, init_state: int, actions, settle_steps: int = 10, images: bool = True):
    """Replay `actions` from `reset(init_state)` + settle steps, recording an Episode
    (observations before each action, images if `images`). Returns the Episode if the
    replay reaches success (truncated at the first success), else None."""
    from sim_bridge.demo_writer import CAMERA_KEYS, Episode
    le.reset(init_state)
    _settle(le, settle_steps)
    env = le.env
    ep = Episode(model_file=env.env.sim.model.get_xml())
    ep.attrs = {"init_state_index": int(init_state), "settle_steps": int(settle_steps),
                "gripper_action0": gripper_action_state(le)}
    obs = le.observe(render=images)
    for t, a in enumerate(actions):
        imgs = {CAMERA_KEYS[c]: im for c, im in obs.images.items()} if images else None
        ep.add_step(a, env.get_sim_state(), obs.gripper_qpos, obs.joint_pos, obs.eef_pos,
                    obs.eef_quat_xyzw, imgs)
        obs, success = le.step(a, render=images)
        if success:
            ep.success_step = t
            return ep
    return None


def replay_demo(control_env, demo: dict, settle: int = 0) -> tuple:
    """Replay a demo dict (from `read_demo_file`) in a LIBERO ControlEnv from its recorded
    first state `states[0]` (restoring robosuite's gripper command if recorded). Returns
    (success, step of the first success or -1)."""
    control_env.reset()
    control_env.set_init_state(np.asarray(demo["states"][0], dtype=np.float64))
    g0 = demo.get("attrs", {}).get("gripper_action0")
    if g0 is not None:
        control_env.env.robots[0].gripper.current_action = np.array(g0, dtype=np.float64)
    for t, a in enumerate(np.asarray(demo["actions"], dtype=np.float64)):
        _, _, done, _ = control_env.step(a)
        if done:
            return True, t
    return bool(control_env.check_success()), -1


# ---------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------
def _stats(rows: list) -> dict:
    succ = [r for r in rows if r["success"]]
    return {"attempts": len(rows), "successes": len(succ),
            "success_rate": round(len(succ) / len(rows), 4) if rows else None,
            "mean_steps": round(float(np.mean([r["steps"] for r in succ])), 1) if succ else None,
            "init_states": [r["init"] for r in rows],
            "failed_init_states": [r["init"] for r in rows if not r["success"]]}


def _load_json(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def write_summary(path, entries: dict, args) -> dict:
    """Merge `entries` ({"suite/task": {...}}) into the JSON at `path`; returns it."""
    doc = _load_json(path)
    tasks = doc.get("tasks", {})
    tasks.update(entries)
    per_suite = {}
    for key, t in tasks.items():
        s = per_suite.setdefault(t["suite"], {"attempts": 0, "successes": 0, "tasks": 0})
        s["attempts"] += t["attempts"]
        s["successes"] += t["successes"]
        s["tasks"] += 1
    for s in per_suite.values():
        s["success_rate"] = round(s["successes"] / s["attempts"], 4) if s["attempts"] else None
    doc = {"expert": "sim_bridge.expert.ScriptedExpert", "expert_version": EXPERT_VERSION,
           "rendering": False, "max_steps": args.max_steps, "settle_steps": args.settle_steps,
           "note": "steps = control steps of the expert after the settle steps, up to and "
                   "including the first successful one",
           "suites": per_suite, "tasks": dict(sorted(tasks.items()))}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(tmp, path)
    return doc


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------
def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def _env_kwargs(le) -> dict:
    """The kwargs the LiberoEnv built its LIBERO env with (for data.attrs['env_args'])."""
    e = le.env.env
    kw = {"robots": ["Panda"], "controller": "OSC_POSE",
          "controller_configs": e.robots[0].controller_config,
          "bddl_file_name": e.bddl_file_name, "control_freq": 20, "horizon": le.horizon,
          "ignore_done": True, "hard_reset": False, "has_renderer": False,
          "has_offscreen_renderer": bool(le.cameras), "use_camera_obs": bool(le.cameras),
          "camera_names": list(le.cameras), "camera_heights": le.image_size,
          "camera_widths": le.image_size, "camera_depths": False,
          "camera_segmentations": None}
    return json.loads(json.dumps(kw, default=_json_default))


def _progress(total, disable):
    try:
        from tqdm import tqdm
        return tqdm(total=total, disable=disable, unit="ep", dynamic_ncols=True)
    except ImportError:  # pragma: no cover
        class _Null:
            def update(self, n=1): pass
            def set_postfix_str(self, s): pass
            def set_description(self, s): pass
            def close(self): pass
        return _Null()


def _task_file(out_dir, task_name) -> str:
    return os.path.join(out_dir, f"{task_name}_demo.hdf5")


def _file_complete(path, want: int, inits) -> bool:
    """A task file is complete if it has `want` demos or tried every init state of `inits`."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            data = f["data"]
            if int(data.attrs.get("num_demos", 0)) >= want:
                return True
            tried = {r["init"] for r in json.loads(data.attrs.get("oat_ros_attempts", "[]"))}
    except (OSError, KeyError, ValueError):
        return False
    return set(inits) <= tried


def record_task(le, suite, task_index, inits, args, bar) -> dict:
    """Record (or measure) one task; returns its summary entry."""
    from sim_bridge.demo_writer import DemoWriter, env_metadata
    from sim_bridge.libero_env import task_uid
    info = le.load(suite, task_index)
    key = f"{suite}/{task_index}"
    entry_base = {"suite": suite, "task_index": task_index, "task_uid": task_uid(suite, task_index),
                  "name": info.name, "language": info.language}
    rows = []
    writer = None
    final = _task_file(args.out, info.name)
    want = int(args.episodes_per_task)
    replay_failures = 0
    if not args.measure_only:
        part = final + ".part"
        if os.path.exists(final) and not args.overwrite:
            if _file_complete(final, want, inits):
                bar.update(len(inits))
                return None                             # complete: skipped
            os.replace(final, part)                     # more demos / init states wanted
        if args.overwrite and os.path.exists(part):
            os.remove(part)
        meta = env_metadata(le.env, le.env.env.bddl_file_name, _env_kwargs(le),
                            extra={"suite": suite, "task_index": task_index,
                                   "task_uid": task_uid(suite, task_index), "name": info.name,
                                   "expert": "sim_bridge.expert.ScriptedExpert",
                                   "expert_version": EXPERT_VERSION})
        writer = DemoWriter(part, meta, mode="a")
        prev = writer.data.attrs.get("oat_ros_attempts")
        if prev is not None:
            rows = json.loads(prev)
            replay_failures = int(writer.data.attrs.get("oat_ros_replay_failures", 0))
    done_inits = {r["init"] for r in rows}
    t0 = time.time()
    for init in inits:
        if writer is not None and writer.num_demos >= want:
            bar.update(1)
            continue
        if init in done_inits:
            bar.update(1)
            continue
        bar.set_description(f"{suite}[{task_index}] init {init}")
        res = run_expert(le, init, args.max_steps, args.settle_steps, verbose=args.verbose)
        row = {"init": int(init), "success": res["success"], "steps": res["steps"]}
        if not res["success"]:
            row["log_tail"] = res["log"][-3:]
        if writer is not None and res["success"]:
            ep = record_replay(le, init, res["actions"], args.settle_steps,
                               images=not args.no_images)
            if ep is None:
                replay_failures += 1
                row["replay_failed"] = True
            else:
                writer.add(ep)
        rows.append(row)
        if writer is not None:
            writer.set_attr("oat_ros_attempts", json.dumps(rows))
            writer.set_attr("oat_ros_replay_failures", replay_failures)
            writer.f.flush()
        ok = sum(r["success"] for r in rows)
        bar.set_postfix_str(f"ok {ok}/{len(rows)}" +
                            (f" demos {writer.num_demos}/{want}" if writer is not None else ""))
        bar.update(1)
    entry = dict(entry_base, **_stats(rows))
    entry["wall_s"] = round(time.time() - t0, 1)
    if writer is not None:
        entry["demos"] = writer.num_demos
        entry["replay_failures"] = replay_failures
        entry["file"] = os.path.basename(final)
        writer.close()
        os.replace(final + ".part", final)
    return {key: entry}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from sim_bridge.libero_env import SUITE_SIZES, LiberoEnv
    try:
        tasks = parse_index_list(args.tasks, SUITE_SIZES[args.suite])
        inits = parse_index_list(args.init_states, 50)
    except ValueError as exc:
        print(f"record_demos: {exc}", file=sys.stderr)
        return 2
    if args.episodes_per_task < 1 and not args.measure_only:
        print("record_demos: --episodes-per-task must be >= 1", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    summary = args.summary or os.path.join(args.out, "summary.json")
    images = not (args.no_images or args.measure_only)
    cams = ("agentview", "robot0_eye_in_hand") if images else ()
    le = LiberoEnv(cameras=cams, image_size=args.image_size, flip_vertical=False)
    bar = _progress(len(tasks) * len(inits), args.no_progress)
    try:
        for t in tasks:
            entry = record_task(le, args.suite, t, inits, args, bar)
            if entry:
                write_summary(summary, entry, args)
    finally:
        bar.close()
        le.close()
    doc = _load_json(summary)
    for key in (f"{args.suite}/{t}" for t in tasks):
        e = doc.get("tasks", {}).get(key)
        if e:
            extra = f"  demos {e['demos']}" if "demos" in e else ""
            print(f"{key:18s} {e['successes']:3d}/{e['attempts']:<3d} mean steps "
                  f"{e['mean_steps']}{extra}  {e['name']}")
    print(f"summary: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
