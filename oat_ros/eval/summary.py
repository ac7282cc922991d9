"""A short text summary of recorded bags (printed by ``oat-ros-bringup --main-job``)."""
from __future__ import annotations

from pathlib import Path


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _ms(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def summarize_bag(path) -> str:
    """Episodes, success (Wilson CI) per task, chunk timing and tokens of the bags under ``path``
    (a bag, or a directory of bags; a crash-left bag is repaired first). Never raises."""
    from oat_ros.eval import bags, metrics

    notes: list[str] = []
    try:
        data = bags.load([Path(path)], log=notes.append)
    except Exception as err:  # noqa: BLE001 - a summary must not fail the caller
        return f"  cannot read bags under {path}: {err}"
    if not data.bags:
        return f"  no bag under {path}"
    res = metrics.evaluate(data)
    ep, ov = res["episodes"], res["success"]["overall"]
    lines = [f"  {msg}" for msg in notes]
    lines.append(f"  bags: {len(data.bags)}   runs: {', '.join(res['runs']) or '–'}   "
                 f"decode: {res['decode']}")
    ci = ("" if ov["ci95_low"] is None
          else f" (95 % CI {100 * ov['ci95_low']:.1f}–{100 * ov['ci95_high']:.1f} %)")
    lines.append(f"  episodes: {ep['total']} ({ep['completed']} completed, {ep['aborted']} "
                 f"aborted, {ep['incomplete']} without END)   success: {ov['successes']}/"
                 f"{ov['n']} = {_pct(ov['rate'])}{ci}")
    for row in res["success"]["per_task"]:
        name = f" {row['task_name']}" if row["task_name"] else ""
        lines.append(f"    {row['suite']}/{row['task_index']}{name}: {row['successes']}/"
                     f"{row['n']} = {_pct(row['rate'])}")
    lat, age = res["latency_ms"]["all"], res["observation_age_ms"]
    tok, dl = res["tokens"]["histogram"], res["deadline"]
    lines.append(f"  chunks: {res['chunks']['total']}   latency ms p50/p95/p99/max: "
                 f"{_ms(lat['p50'])}/{_ms(lat['p95'])}/{_ms(lat['p99'])}/{_ms(lat['max'])}   "
                 f"observation age p50: {_ms(age['p50'])} ms")
    lines.append(f"  tokens per chunk (mean): {_ms(tok['mean'])}   deadline misses: "
                 + (f"{dl['misses']}/{dl['n']} = {_pct(dl['rate'])}" if dl["n"] else "no deadline"))
    for warning in data.warnings:
        lines.append(f"  warning: {warning}")
    lines.append(f"  full report: oat-ros-eval report {path} --out <dir>")
    return "\n".join(lines)
