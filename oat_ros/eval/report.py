"""Render evaluation results: Markdown report + matplotlib PNG plots (Agg) + JSON numbers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

DEFINITIONS = (
    "Success rate = successes / completed episodes (END events; ABORTed and never-ended "
    "episodes excluded and listed separately), with a 95 % Wilson score interval. "
    "Quantiles use linear interpolation (numpy `percentile`). Deadline-miss rate = chunks with "
    "`deadline_met == false` / chunks with `deadline_ms > 0`. Chunks belong to the episode "
    "whose START..END (+ grace) window holds their receive time."
)


# -- formatting -----------------------------------------------------------------------------------

def _num(value, digits=2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{value:.{digits}f}"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _ci(row) -> str:
    if row.get("ci95_low") is None:
        return "–"
    return f"[{100 * row['ci95_low']:.1f}, {100 * row['ci95_high']:.1f}]"


def _signed_pct(value) -> str:
    return "–" if value is None else f"{100 * value:+.1f} pp"


def _signed(value, digits=2) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _task(row) -> str:
    name = f" {row['task_name']}" if row.get("task_name") else ""
    return f"{row['suite']}/{row['task_index']}{name}"


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _clean(obj):
    """NaN/inf -> None so the JSON stays standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(result: dict, path: Path):
    Path(path).write_text(json.dumps(_clean(result), indent=2, default=_json_default) + "\n")


# -- plots ----------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_success_per_task(series: dict, path: Path):
    """Grouped bars (one group per task, one bar per label) with Wilson 95 % error bars."""
    plt = _pyplot()
    tasks = sorted({(r["suite"], r["task_index"]) for rows in series.values() for r in rows})
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(tasks) * max(1, len(series)) + 2), 3.8))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(tasks))
    for k, (label, rows) in enumerate(series.items()):
        by = {(r["suite"], r["task_index"]): r for r in rows}
        vals, lo, hi = [], [], []
        for t in tasks:
            r = by.get(t)
            v = r["rate"] if r and r["rate"] is not None else np.nan
            vals.append(v)
            lo.append(max(0.0, v - r["ci95_low"]) if r and r["ci95_low"] is not None else 0)
            hi.append(max(0.0, r["ci95_high"] - v) if r and r["ci95_high"] is not None else 0)
        ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, yerr=[lo, hi],
               capsize=3, label=label)
    ax.set_xticks(x, [f"{s}\n{i}" for s, i in tasks], fontsize=8)
    ax.set_ylim(0, 1.22 if len(series) > 1 else 1.05)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("success rate (95 % Wilson CI)")
    ax.set_title("Success per task")
    if len(series) > 1:
        ax.legend(loc="upper center", ncol=len(series), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency_cdf(series: dict, path: Path, deadlines=()):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, values in series.items():
        arr = np.sort(np.asarray(values, dtype=np.float64))
        if arr.size:
            ax.step(arr, np.arange(1, arr.size + 1) / arr.size, where="post",
                    label=f"{label} (n={arr.size})")
    for d in sorted({d for d in deadlines if d and d > 0}):
        ax.axvline(d, color="grey", ls="--", lw=1)
        ax.text(d, 0.02, f" {d:g} ms", color="grey", fontsize=8)
    ax.set_xlabel("chunk latency (ms)")
    ax.set_ylabel("fraction of chunks ≤ x")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Chunk latency CDF")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tokens_hist(series: dict, path: Path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    width = 0.8 / max(1, len(series))
    for k, (label, hist) in enumerate(series.items()):
        values = np.asarray(hist["values"])
        counts = np.asarray(hist["counts"], dtype=np.float64)
        frac = counts / counts.sum() if counts.sum() else counts
        ax.bar(values + (k - (len(series) - 1) / 2) * width, frac, width,
               label=f"{label} (mean {_num(hist['mean'])})")
    ax.set_xlabel("tokens generated per chunk")
    ax.set_ylabel("fraction of chunks")
    ax.legend(fontsize=8)
    ax.set_title("Tokens per chunk")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- markdown sections ----------------------------------------------------------------------------

def _runs_section(res: dict) -> list:
    rows = []
    for run_id, run in res["runs"].items():
        decode = ", ".join(f"{k} ({v})" for k, v in run["decode"].items()) or "–"
        deadlines = ", ".join(f"{k} ms ({v})" for k, v in run["deadlines_ms"].items()) or "–"
        rows.append([run_id or "(empty run_id)", run["episodes"], run["chunks"], decode,
                     deadlines, ", ".join(run["policies"]) or "–"])
    return [_table(["run_id", "episodes", "chunks", "decode (chunks)", "deadline (chunks)",
                    "policy"], rows)]


def _success_section(res: dict) -> list:
    ep = res["episodes"]
    ov = res["success"]["overall"]
    lines = [
        f"Episodes: {ep['total']} ({ep['completed']} completed, {ep['aborted']} aborted, "
        f"{ep['incomplete']} without END).",
        "",
        f"**Overall success: {_pct(ov['rate'])}** ({ov['successes']}/{ov['n']}, "
        f"95 % CI {_ci(ov)})",
        "",
    ]
    rows = [[_task(r), r["n"], r["successes"], _pct(r["rate"]), _ci(r), r["aborted"],
             r["incomplete"]] for r in res["success"]["per_task"]]
    lines.append(_table(["task", "episodes", "successes", "success", "95 % CI", "aborted",
                         "no END"], rows))
    return lines


def _quantile_row(name, q) -> list:
    return [name, q["n"], _num(q["p50"]), _num(q["p95"]), _num(q["p99"]), _num(q["max"]),
            _num(q["mean"])]


def _timing_section(res: dict) -> list:
    rows = [_quantile_row("latency (all)", res["latency_ms"]["all"])]
    if len(res["latency_ms"]["by_config"]) > 1:
        rows += [_quantile_row(f"latency ({k})", q)
                 for k, q in res["latency_ms"]["by_config"].items()]
    rows += [_quantile_row(f"{k} stage", q) for k, q in res["stage_ms"].items()]
    rows.append(_quantile_row("observation age", res["observation_age_ms"]))
    c = res["chunks"]
    return [f"Chunks: {c['total']} ({c['in_episodes']} in episodes, {c['outside_episodes']} "
            f"outside; {c['truncated']} truncated, {c['clipped']} clipped).", "",
            _table(["ms", "n", "p50", "p95", "p99", "max", "mean"], rows)]


def _tokens_section(res: dict) -> list:
    d = res["deadline"]
    lines = [f"Deadline-miss rate: **{_pct(d['rate'])}** ({d['misses']}/{d['n']} chunks with a "
             f"deadline, 95 % CI {_ci(d)}; {d['truncated']} truncated).", ""]
    rows = []
    for r in res["tokens"]["by_deadline"]:
        hist = " ".join(f"{v}:{c}" for v, c in zip(r["histogram"]["values"],
                                                   r["histogram"]["counts"]) if c)
        rows.append([_num(r["deadline_ms"]) if r["deadline_ms"] > 0 else "none", r["n"],
                     _num(r["tokens_mean"]), _num(r["tokens_max_mean"]),
                     _pct(r["truncated_rate"]), _pct(r["miss_rate"]), _num(r["latency_p50"]),
                     _num(r["latency_p95"]), hist])
    lines.append(_table(["deadline (ms)", "chunks", "tokens mean", "tokens requested",
                         "truncated", "missed", "latency p50", "latency p95",
                         "tokens histogram (value:count)"], rows))
    return lines


def render_markdown(res: dict, plots: dict, title: str = "OAT evaluation") -> str:
    lines = [f"# {title}", "", f"Bags: {', '.join(f'`{b}`' for b in res['bags'])}", "",
             f"Decode: {res['decode']}", ""]
    if res["warnings"]:
        lines += ["Warnings:", *[f"- {w}" for w in res["warnings"]], ""]
    lines += ["## Runs", "", *_runs_section(res), "", "## Success", "", *_success_section(res), ""]
    if "success" in plots:
        lines += [f"![success per task]({plots['success']})", ""]
    lines += ["## Chunk timing", "", *_timing_section(res), ""]
    if "latency" in plots:
        lines += [f"![latency CDF]({plots['latency']})", ""]
    lines += ["## Tokens and deadlines", "", *_tokens_section(res), ""]
    if "tokens" in plots:
        lines += [f"![tokens per chunk]({plots['tokens']})", ""]
    lines += ["## Definitions", "", DEFINITIONS, ""]
    return "\n".join(lines)


def write_report(res: dict, data, out_dir, *, plots: bool = True,
                 title: str = "OAT evaluation") -> dict:
    """report.md + report.json (+ PNG plots) for one dataset; returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made = {}
    if plots:
        label = res["decode"]
        plot_success_per_task({label: res["success"]["per_task"]}, out / "success_per_task.png")
        deadlines = [c.deadline_ms for c in data.chunks]
        plot_latency_cdf({label: [c.latency_ms for c in data.chunks]}, out / "latency_cdf.png",
                         deadlines)
        plot_tokens_hist({label: res["tokens"]["histogram"]}, out / "tokens_per_chunk.png")
        made = {"success": "success_per_task.png", "latency": "latency_cdf.png",
                "tokens": "tokens_per_chunk.png"}
    (out / "report.md").write_text(render_markdown(res, made, title))
    write_json(res, out / "report.json")
    return {"markdown": str(out / "report.md"), "json": str(out / "report.json"),
            **{k: str(out / v) for k, v in made.items()}}


# -- comparison -----------------------------------------------------------------------------------

def render_comparison(res: dict, plots: dict, title: str = "OAT paired comparison") -> str:
    la, lb = res["labels"]["a"], res["labels"]["b"]
    p = res["paired"]["overall"]
    lines = [f"# {title}: {la} (A) vs {lb} (B)", "",
             f"A: {', '.join(f'`{b}`' for b in res['a']['bags'])} — decode {res['a']['decode']}",
             "",
             f"B: {', '.join(f'`{b}`' for b in res['b']['bags'])} — decode {res['b']['decode']}",
             "", "Episodes are paired on (suite, task_index, init_state_index, seed); "
             "delta = B − A.", "", "## Paired success", "",
             f"**{la}: {_pct(p['a_rate'])}, {lb}: {_pct(p['b_rate'])}, delta "
             f"{_signed_pct(p['delta'])}** over {p['n_pairs']} pairs "
             f"(both {p['both']}, only {la} {p['a_only']}, only {lb} {p['b_only']}, neither "
             f"{p['neither']}; McNemar exact p = {_num(p['mcnemar_p'], 3)}). "
             f"Unpaired episodes: {la} {res['paired']['unpaired_a']}, "
             f"{lb} {res['paired']['unpaired_b']}.", ""]
    rows = [[_task(r), r["n_pairs"], _pct(r["a_rate"]), _pct(r["b_rate"]),
             _signed_pct(r["delta"]), r["a_only"], r["b_only"], r["unpaired_a"], r["unpaired_b"]]
            for r in res["paired"]["per_task"]]
    lines += [_table(["task", "pairs", la, lb, "delta", f"only {la}", f"only {lb}",
                      f"unpaired {la}", f"unpaired {lb}"], rows), ""]
    if "success" in plots:
        lines += [f"![success per task]({plots['success']})", ""]
    ca, cb, cd = res["chunks"]["a"], res["chunks"]["b"], res["chunks"]["delta"]
    rows = []
    for k in ("p50", "p95", "p99", "max", "mean"):
        rows.append([f"latency {k} (ms)", _num(ca["latency_ms"][k]), _num(cb["latency_ms"][k]),
                     _signed(cd["latency_ms"][k])])
    for k in ("p50", "p95"):
        rows.append([f"observation age {k} (ms)", _num(ca["observation_age_ms"][k]),
                     _num(cb["observation_age_ms"][k]), _signed(cd["observation_age_ms"][k])])
    rows.append(["tokens per chunk (mean)", _num(ca["tokens_mean"]), _num(cb["tokens_mean"]),
                 _signed(cd["tokens_mean"])])
    rows.append(["deadline-miss rate", _pct(ca["deadline_miss_rate"]),
                 _pct(cb["deadline_miss_rate"]), _signed_pct(cd["deadline_miss_rate"])])
    rows.append(["chunks", ca["n_chunks"], cb["n_chunks"], ""])
    lines += ["## Chunks", "", _table(["", la, lb, "delta"], rows), ""]
    for key, alt in (("latency", "latency CDF"), ("tokens", "tokens per chunk")):
        if key in plots:
            lines += [f"![{alt}]({plots[key]})", ""]
    for side, label in (("a", la), ("b", lb)):
        lines += [f"## {label} (A)" if side == "a" else f"## {label} (B)", "",
                  *_success_section(res[side]), "", *_timing_section(res[side]), "",
                  *_tokens_section(res[side]), ""]
    lines += ["## Definitions", "", DEFINITIONS + " McNemar: exact two-sided binomial test "
              "on the discordant pairs.", ""]
    return "\n".join(lines)


def write_comparison(res: dict, data_a, data_b, out_dir, *, plots: bool = True) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    la, lb = res["labels"]["a"], res["labels"]["b"]
    made = {}
    if plots:
        plot_success_per_task({la: res["a"]["success"]["per_task"],
                               lb: res["b"]["success"]["per_task"]}, out / "success_per_task.png")
        deadlines = [c.deadline_ms for c in [*data_a.chunks, *data_b.chunks]]
        plot_latency_cdf({la: [c.latency_ms for c in data_a.chunks],
                          lb: [c.latency_ms for c in data_b.chunks]}, out / "latency_cdf.png",
                         deadlines)
        plot_tokens_hist({la: res["a"]["tokens"]["histogram"],
                          lb: res["b"]["tokens"]["histogram"]}, out / "tokens_per_chunk.png")
        made = {"success": "success_per_task.png", "latency": "latency_cdf.png",
                "tokens": "tokens_per_chunk.png"}
    (out / "comparison.md").write_text(render_comparison(res, made))
    write_json(res, out / "comparison.json")
    return {"markdown": str(out / "comparison.md"), "json": str(out / "comparison.json"),
            **{k: str(out / v) for k, v in made.items()}}
