"""A known synthetic evaluation session: Episode START/END events and ActionChunks.

Shared by the publisher process (rec_scripts/session_pub.py) and the tests, so the tests know
exactly what was sent. Every value is exact in float32.
"""
from __future__ import annotations

from collections import Counter

TASKS = [
    ("libero_object", 0, "pick_up_the_alphabet_soup"),
    ("libero_object", 1, "pick_up_the_cream_cheese"),
    ("libero_spatial", 3, "pick_up_the_black_bowl"),
]
HORIZON, ACTION_DIM = 32, 7


def episode_fields(run_id, index, event, success=False, n_chunks=0):
    suite, task_index, name = TASKS[index % len(TASKS)]
    reason = "start" if event == 0 else ("success" if success else "timeout")
    if event == 2:
        reason = "reset"
    return {
        "header": {"stamp": {"sec": 100 + index, "nanosec": 1000 * event}, "frame_id": "world"},
        "event": event, "run_id": run_id, "episode_index": index, "suite": suite,
        "task_index": task_index, "task_uid": 10 + task_index, "task_name": name,
        "language_instruction": name.replace("_", " "),
        "init_state_index": index // len(TASKS), "seed": 1000 + index,
        "step": 0 if event == 0 else 40 + index, "max_steps": 300,
        "chunks_executed": 0 if event == 0 else n_chunks,
        "success": bool(success) and event == 1, "reason": reason,
    }


def chunk_fields(k, mode="ar", deadline_ms=0.0, episode=None):
    """Chunk number k (global): latency/tokens/deadline follow simple known patterns."""
    latency = 10.0 + (k % 10) * 1.5 + (0.25 if mode == "blockwise" else 0.0)
    tokens_max = 8
    if deadline_ms > 0:
        met = latency <= deadline_ms
        tokens = tokens_max if met else max(1, tokens_max - 1 - k % 4)
    else:
        met, tokens = True, tokens_max
    return {
        "header": {"stamp": {"sec": 200 + k // 4, "nanosec": (k % 4) * 250_000_000},
                   "frame_id": "panda_link0"},
        "seq": k, "policy_id": f"synthetic@{mode}", "task_uid": 10 + (episode or 0) % 3,
        "horizon": HORIZON, "action_dim": ACTION_DIM, "n_action_steps": 16,
        "control_period_s": 0.05,
        "actions": [((k * 7 + i) % 251 - 125) / 8.0 for i in range(HORIZON * ACTION_DIM)],
        "decode_mode": mode, "tokens_generated": tokens, "tokens_max": tokens_max,
        "prefix_len": 4 if mode == "blockwise" else 0,
        "refine_iters": 1 if mode == "blockwise" else 0,
        "temperature": 0.0, "top_k": 0, "seed": -1 if k % 2 else k,
        "deadline_ms": deadline_ms, "deadline_reference": 0, "deadline_met": met,
        "truncated": tokens < tokens_max, "observation_age_ms": 2.0 + (k % 5) * 0.5,
        "latency_ms": latency, "encode_ms": 4.0, "decode_ms": latency - 5.0,
        "detokenize_ms": 1.0, "clipped": k % 7 == 0,
    }


def make_session(run_id="run_a", mode="ar", successes=(1, 0, 1, 1, 0, 1),
                 chunks_per_episode=5, deadline_ms=20.0, chunks_before=2, abort_last=False):
    """Ordered events [{'kind': 'episode'|'chunk', 'fields': {...}, 'episode': i|None}]."""
    events, k = [], 0
    for _ in range(chunks_before):
        events.append({"kind": "chunk", "episode": None,
                       "fields": chunk_fields(k, mode, deadline_ms)})
        k += 1
    for i, success in enumerate(successes):
        events.append({"kind": "episode", "episode": i,
                       "fields": episode_fields(run_id, i, 0)})
        for _ in range(chunks_per_episode):
            events.append({"kind": "chunk", "episode": i,
                           "fields": chunk_fields(k, mode, deadline_ms, i)})
            k += 1
        end_event = 2 if abort_last and i == len(successes) - 1 else 1
        events.append({"kind": "episode", "episode": i,
                       "fields": episode_fields(run_id, i, end_event, success,
                                                chunks_per_episode)})
    return events


def pct(values, q):
    """Linear-interpolation percentile, by hand."""
    v = sorted(values)
    rank = q / 100 * (len(v) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (rank - lo)


def expected_numbers(events):
    chunks = [e["fields"] for e in events if e["kind"] == "chunk"]
    ends = [e["fields"] for e in events if e["kind"] == "episode" and e["fields"]["event"] == 1]
    per_task = Counter()
    succ_task = Counter()
    for f in ends:
        per_task[(f["suite"], f["task_index"])] += 1
        succ_task[(f["suite"], f["task_index"])] += f["success"]
    lat = [c["latency_ms"] for c in chunks]
    with_deadline = [c for c in chunks if c["deadline_ms"] > 0]
    return {
        "n": len(ends), "successes": sum(f["success"] for f in ends),
        "per_task": {k: (succ_task[k], n) for k, n in per_task.items()},
        "lat": {"p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99), "max": max(lat)},
        "age_p50": pct([c["observation_age_ms"] for c in chunks], 50),
        "miss": sum(not c["deadline_met"] for c in with_deadline) / len(with_deadline),
        "tokens": Counter(c["tokens_generated"] for c in chunks),
        "n_chunks": len(chunks),
    }
