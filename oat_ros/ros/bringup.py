"""Console bringup: start the oat_ros graph from the same YAML the launch files use.

`ros2 launch` is not available where ROS 2 comes from PyPI wheels, so this starts every node
of a profile as its own process (exactly what launch_ros would do), forwards SIGINT/SIGTERM,
and in `--main-job` mode runs one episode and prints a summary from the recorded bag.

    oat-ros-bringup sim --main-job                 # one LIBERO episode, then a summary
    oat-ros-bringup sim --set policy_node.decode_mode=blockwise
    oat-ros-bringup robot --params my_robot.yaml
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from oat_ros.paths import default_params_file


@dataclass(frozen=True)
class NodeSpec:
    name: str          # node name = key in the parameter YAML
    module: str        # python module with main()
    issue: str         # where it is being built, for the "missing" message
    sim_time: bool     # use_sim_time in the sim profile


NODES = {
    "policy_node": NodeSpec("policy_node", "oat_ros.ros.policy_node", "issue 5", True),
    "sim_bridge": NodeSpec("sim_bridge", "sim_bridge.bridge_node", "issue 6", False),
    "recorder": NodeSpec("recorder", "oat_ros.ros.recorder_node", "issue 7", False),
    "chunk_executor": NodeSpec("chunk_executor", "oat_ros.ros.executor_node", "issue 9", False),
}
PROFILES = {
    "sim": ["recorder", "policy_node", "sim_bridge"],
    "robot": ["recorder", "policy_node", "chunk_executor"],
}
# The node whose exit ends the graph in --main-job mode.
MAIN_NODE = {"sim": "sim_bridge", "robot": None}


def node_available(spec: NodeSpec) -> bool:
    try:
        return importlib.util.find_spec(spec.module) is not None
    except ModuleNotFoundError:  # its parent package does not exist either
        return False


def node_command(spec: NodeSpec, params_file: Path, overrides: list[str], sim: bool = False) -> list[str]:
    """The process command line for one node: python + its main() + standard --ros-args.
    In simulation, nodes that stamp or age observations follow the bridge's /clock."""
    code = f"import sys; from {spec.module} import main; sys.exit(main())"
    cmd = [sys.executable, "-c", code, "--ros-args", "-r", f"__node:={spec.name}",
           "--params-file", str(params_file)]
    if sim and spec.sim_time:
        cmd += ["-p", "use_sim_time:=true"]
    if sim and spec.name == "policy_node":
        cmd += ["-p", "trigger:=request"]  # the bridge asks for each chunk (lockstep)
    for item in overrides:
        cmd += ["-p", item]
    return cmd


def parse_overrides(items: list[str]) -> dict[str, list[str]]:
    """`node.param=value` strings -> {node: ['param:=value']} (value in ROS YAML syntax)."""
    per_node: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or node not in NODES:
            raise SystemExit(f"--set {item!r}: expected NODE.PARAM=VALUE with NODE one of {sorted(NODES)}")
        per_node.setdefault(node, []).append(f"{param}:={value}")
    return per_node


def graph_env() -> dict:
    env = dict(os.environ)
    # Network rule of this project: DDS discovery stays on loopback unless the user says otherwise.
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Graph:
    """The running processes of one profile."""

    def __init__(self, profile: str, params_file: Path, overrides: dict[str, list[str]], log_dir: Path):
        self.profile = profile
        self.procs: dict[str, subprocess.Popen] = {}
        self.missing: list[NodeSpec] = []
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        env = graph_env()
        for name in PROFILES[profile]:
            spec = NODES[name]
            if not node_available(spec):
                self.missing.append(spec)
                continue
            log = open(log_dir / f"{name}.log", "wb")
            self.procs[name] = subprocess.Popen(
                node_command(spec, params_file, overrides.get(name, []), sim=profile == "sim"), env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for(self, name: str, timeout: float | None) -> int | None:
        proc = self.procs[name]
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def first_exit(self) -> tuple[str, int] | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return name, proc.returncode
        return None

    def stop(self, timeout: float = 15.0):
        """SIGINT every node (recorder last, so it sees everything), then SIGKILL stragglers."""
        order = [n for n in self.procs if n != "recorder"] + [n for n in self.procs if n == "recorder"]
        for name in order:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def print_summary(graph: Graph, bag_dir: Path | None, wall_s: float):
    print("\n=== oat_ros main job summary ===")
    print(f"profile: {graph.profile}   wall time: {wall_s:.1f} s   logs: {graph.log_dir}")
    for name, proc in graph.procs.items():
        print(f"  node {name:<15} exit code {proc.returncode}")
    for spec in graph.missing:
        print(f"  node {spec.name:<15} MISSING ({spec.module} not built yet: {spec.issue})")
    if bag_dir is None or not bag_dir.exists():
        print("bag: none recorded")
        return
    print(f"bag: {bag_dir}")
    if not node_available(NodeSpec("", "oat_ros.eval.summary", "", False)):
        print("  (bag summary needs oat_ros.eval: issue 7)")
        return
    from oat_ros.eval.summary import summarize_bag
    print(summarize_bag(bag_dir))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="oat-ros-bringup",
        description="Start the oat_ros graph (one process per node) from a ROS 2 parameter YAML, "
                    "the same file launch/*.launch.py load. Use it where `ros2 launch` is not "
                    "installed (ROS 2 from PyPI wheels).",
        epilog="Profiles: sim = recorder + policy_node + sim_bridge (LIBERO); "
               "robot = recorder + policy_node + chunk_executor. Ctrl-C stops every node cleanly.")
    p.add_argument("profile", choices=sorted(PROFILES), help="which graph to start")
    p.add_argument("--params", type=Path, default=None,
                   help="ROS 2 parameter YAML (default: the package's config/oat_ros.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override one parameter, e.g. --set policy_node.decode_mode=blockwise "
                        "(repeatable; VALUE in YAML syntax)")
    p.add_argument("--main-job", action="store_true",
                   help="run until the sim bridge finishes its episodes, stop the graph, print a summary")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="--main-job: stop the graph after this many seconds (default 1800)")
    p.add_argument("--run-dir", type=Path, default=Path("runs") / time.strftime("%Y%m%d-%H%M%S"),
                   help="where logs and the bag go (default runs/<date-time>)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params_file = (args.params or default_params_file()).resolve()
    if not params_file.exists():
        raise SystemExit(f"--params: {params_file} does not exist")
    run_dir = args.run_dir.resolve()
    bag_dir = run_dir / "bag"
    overrides = parse_overrides(args.set)
    overrides.setdefault("recorder", []).insert(0, f"output_dir:={bag_dir}")
    policy_note = ""
    if args.main_job and not any(o.startswith("policy_path:=") for o in overrides.get("policy_node", [])):
        from oat_ros.default_policy import resolve
        path, policy_note = resolve()
        if path is not None:
            overrides.setdefault("policy_node", []).insert(0, f"policy_path:={path}")
        print(f"[bringup] policy: {policy_note}")
    t0 = time.monotonic()
    graph = Graph(args.profile, params_file, overrides, run_dir / "logs")
    for spec in graph.missing:
        print(f"[bringup] {spec.name}: not available yet ({spec.module}, {spec.issue}); running without it")
    print(f"[bringup] started {', '.join(graph.procs) or 'nothing'}; logs in {graph.log_dir}")
    stop_requested = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop_requested.append(True))
    main_node = MAIN_NODE[args.profile]
    try:
        while not stop_requested:
            if args.main_job and (main_node not in graph.procs):
                print(f"[bringup] --main-job needs {main_node}, which is not available: nothing to run")
                break
            ended = graph.first_exit()
            if ended:
                name, code = ended
                if not (args.main_job and name == main_node and code == 0):
                    print(f"[bringup] {name} exited with code {code}:\n{graph.tail(name)}")
                break
            if args.main_job and time.monotonic() - t0 > args.timeout:
                print(f"[bringup] --timeout {args.timeout:.0f} s reached")
                break
            time.sleep(0.2)
    finally:
        graph.stop()
    if args.main_job:
        print_summary(graph, bag_dir, time.monotonic() - t0)
        if policy_note:
            print(f"policy: {policy_note}")
    failed = [n for n, p in graph.procs.items() if p.returncode not in (0, -signal.SIGINT)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
