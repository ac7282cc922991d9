"""oat-ros-eval: evaluation reports from recorded bags (no ROS installation needed).

    oat-ros-eval report BAG [BAG ...] --out DIR
    oat-ros-eval compare --a BAG [BAG ...] --b BAG [BAG ...] --out DIR
    oat-ros-eval repair BAG [BAG ...]
"""
from __future__ import annotations

import argparse
import json
import sys

from oat_ros.eval import bags as bagio

EPILOG = """\
BAG is a rosbag2 directory (mcap or sqlite3, as written by oat-ros-recorder or ros2 bag
record), its .mcap/.db3 file, or any directory holding bags (searched recursively, e.g. the
recorder's output_dir or a split recording). Episodes come from oat_ros_interfaces/Episode
messages and chunks from ActionChunk messages, whatever their topic names.

A bag left by a killed recorder (no metadata.yaml) is repaired in place first (the original
file is kept as <file>.crashed); pass --no-repair to refuse instead.

examples:
  oat-ros-eval report runs/bags/oat_20250101_120000 --out runs/report
  oat-ros-eval compare --a runs/ar --b runs/blockwise --label-a ar --label-b blockwise \\
      --out runs/ar_vs_blockwise
  oat-ros-eval repair runs/bags/oat_20250101_120000
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oat-ros-eval", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate OAT policy runs from rosbag2 bags: success per task (Wilson "
                    "95 % CI), chunk latency quantiles, tokens per chunk vs deadline, "
                    "deadline-miss rate, observation age, and paired A/B comparisons. Writes "
                    "a Markdown report with PNG plots and a JSON file with every number.",
        epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p):
        p.add_argument("--out", required=True, help="output directory (created)")
        p.add_argument("--no-plots", action="store_true", help="skip the matplotlib PNGs")
        p.add_argument("--no-repair", action="store_true",
                       help="fail on crash-left bags instead of repairing them in place")
        p.add_argument("--grace-s", type=float, default=0.1,
                       help="a chunk received up to this long after an episode's END still "
                            "belongs to it (default 0.1)")

    rep = sub.add_parser("report", help="report on one run (one or many bags)",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Report on the episodes and chunks of the given bags "
                                     "(all together). Writes OUT/report.md, OUT/report.json, "
                                     "OUT/success_per_task.png, OUT/latency_cdf.png, "
                                     "OUT/tokens_per_chunk.png.", epilog=EPILOG)
    rep.add_argument("bags", nargs="+", metavar="BAG")
    rep.add_argument("--title", default="OAT evaluation", help="report title")
    common(rep)

    cmp_ = sub.add_parser("compare", help="paired comparison of two runs (A vs B)",
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          description="Pair episodes of A and B on (suite, task_index, "
                                      "init_state_index, seed) and report per-task success "
                                      "deltas (B - A), McNemar p-value, and chunk latency / "
                                      "tokens / deadline-miss deltas. Writes OUT/comparison.md, "
                                      "OUT/comparison.json and PNG plots.", epilog=EPILOG)
    cmp_.add_argument("--a", nargs="+", required=True, metavar="BAG", help="bags of run A")
    cmp_.add_argument("--b", nargs="+", required=True, metavar="BAG", help="bags of run B")
    cmp_.add_argument("--label-a", default=None,
                      help="name of A (default: its decode mode, e.g. 'ar K=8')")
    cmp_.add_argument("--label-b", default=None, help="name of B (default: its decode mode)")
    common(cmp_)

    rp = sub.add_parser("repair", help="make crash-left bags readable (writes metadata.yaml)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Rebuild a bag whose recorder was killed (no metadata.yaml) "
                                    "from everything that reached the disk. The original file "
                                    "is kept as <file>.crashed unless --no-backup. Bags that "
                                    "are already finalized are left alone.", epilog=EPILOG)
    rp.add_argument("bags", nargs="+", metavar="BAG")
    rp.add_argument("--no-backup", action="store_true", help="delete the crash-left file")
    rp.add_argument("--force", action="store_true",
                    help="repair even if the recorder that wrote the bag still runs")
    return parser


def _log(msg: str):
    print(msg, file=sys.stderr)


def _load(paths, args):
    return bagio.load(paths, repair=not args.no_repair, grace_s=args.grace_s, log=_log)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "repair":
            return _repair(args)
        from oat_ros.eval import metrics, report

        if args.command == "report":
            data = _load(args.bags, args)
            res = metrics.evaluate(data)
            paths = report.write_report(res, data, args.out, plots=not args.no_plots,
                                        title=args.title)
            ov = res["success"]["overall"]
            lat = res["latency_ms"]["all"]
            print(f"{res['episodes']['completed']} episodes, success "
                  f"{report._pct(ov['rate'])} {report._ci(ov)}; {lat['n']} chunks, latency "
                  f"p50 {report._num(lat['p50'])} ms p95 {report._num(lat['p95'])} ms")
        else:
            data_a, data_b = _load(args.a, args), _load(args.b, args)
            label_a = args.label_a or data_a.decode_label()
            label_b = args.label_b or data_b.decode_label()
            if label_a == label_b:
                label_a, label_b = f"A: {label_a}", f"B: {label_b}"
            res = metrics.compare(data_a, data_b, label_a, label_b)
            paths = report.write_comparison(res, data_a, data_b, args.out,
                                            plots=not args.no_plots)
            p = res["paired"]["overall"]
            print(f"{p['n_pairs']} pairs: {label_a} {report._pct(p['a_rate'])}, {label_b} "
                  f"{report._pct(p['b_rate'])}, delta {report._signed_pct(p['delta'])}")
        print("wrote " + ", ".join(paths.values()))
        return 0
    except (bagio.BagError, FileNotFoundError) as err:
        _log(f"oat-ros-eval: error: {err}")
        return 2


def _repair(args) -> int:
    code = 0
    for path in args.bags:
        try:
            targets = bagio.find_bags(path)
        except (bagio.BagError, FileNotFoundError) as err:
            _log(f"oat-ros-eval: error: {err}")
            code = 2
            continue
        for bag in targets:
            try:
                result = bagio.repair_bag(bag, backup=not args.no_backup, force=args.force)
            except bagio.BagError as err:
                _log(f"oat-ros-eval: error: {err}")
                code = 2
                continue
            print(json.dumps(result.__dict__, sort_keys=True))
    return code


if __name__ == "__main__":
    sys.exit(main())
