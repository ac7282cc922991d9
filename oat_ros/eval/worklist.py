"""The evaluation work list: one job per episode, its directory, completeness and outcome.

A job is one episode: (decode setting, suite, task, init state, seed). Its directory
``OUT/runs/<setting>/<suite>-t<task>-i<init>-s<seed>/`` holds the bag of that episode (``bag/``),
the graph's logs, ``worker.json`` (where and on which ROS_DOMAIN_ID the last attempt ran),
``job.json`` (attempts, status, last error; written by the driver) and, once the bag holds the
episode's END and is finalized, ``complete.json`` (the episode's outcome, read from the bag).
A job is complete only if its bag is; anything else in a job directory is redone from scratch,
so an episode can never be counted twice nor half-counted.

No ROS and no LIBERO needed here (the bag is read with rosbags).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

SETTING_KEYS = {"K": "max_tokens", "P": "prefix_len", "r": "refine_iters", "deadline": "deadline_ms",
                "T": "temperature", "topk": "top_k", "seed": "seed"}
COMPLETE_NAME = "complete.json"   # the outcome of a finished episode (written after its bag was checked)
JOB_NAME = "job.json"             # the driver's record: attempts, status, errors
WORKER_NAME = "worker.json"       # the attempt running now: host, pid, ROS_DOMAIN_ID
POSE_TYPE = "geometry_msgs/msg/PoseStamped"


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
class EpisodeJob:
    setting: DecodeSetting
    suite: str
    task_index: int
    init_state: int            # -1 = seeded reset (np.random seeded with `seed`)
    seed: int                  # sim_bridge.seed
    max_steps: int             # 0 = the suite's default

    @property
    def name(self) -> str:
        """The job id: unique in a work list, and the job directory below OUT/runs."""
        return (f"{self.setting.label}/{self.suite}-t{self.task_index:02d}-i{self.init_state:02d}"
                f"-s{self.seed}")

    @property
    def run_id(self) -> str:
        return self.name.replace("/", "_")

    @property
    def key(self) -> tuple:
        """What the episode is paired on in comparisons (as in the bags)."""
        return (self.suite, self.task_index, self.init_state, self.seed)


_RANGE_PART = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")


def parse_range(text: str) -> list[int]:
    """'0-4,7' -> [0, 1, 2, 3, 4, 7]; '-1' -> [-1] (seeded reset)."""
    out = []
    for part in str(text).split(","):
        m = _RANGE_PART.match(part)
        if not m:
            raise ValueError(f"'{part}' is not N or N-M")
        lo, hi = int(m.group(1)), m.group(2)
        out += list(range(lo, int(hi) + 1)) if hi is not None else [lo]
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' (0 <= i < N) -> (i, N), e.g. from a Slurm array: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT."""
    index, sep, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/N, e.g. 0/4") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need 0 <= i < N")
    return i, n


def work_list(settings, suite, tasks, init_states, max_steps, seeds=(0,)) -> list[EpisodeJob]:
    """Every episode: settings x tasks x init states x seeds, in that (deterministic) order."""
    jobs = [EpisodeJob(s, suite, int(t), int(i), int(seed), int(max_steps))
            for s in settings for t in tasks for i in init_states for seed in seeds]
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError("the work list names an episode twice (repeated setting, task, init state or seed)")
    return jobs


def shard(jobs: list, index: int, count: int) -> list:
    """Shard `index` of `count`: every count-th job of the work list, starting at `index`.
    Deterministic (the work list's order), disjoint, and together the whole list."""
    return jobs[index::count]


def job_dir(out: Path, job: EpisodeJob) -> Path:
    return Path(out) / "runs" / job.name


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict):
    """Atomic (rename), so a reader on a shared file system never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _finalized_bags(d: Path) -> list[Path] | None:
    from oat_ros.eval import bags as bagio
    bag = d / "bag"
    if not bag.is_dir():
        return None
    found = bagio.find_bags(bag)
    if not found or any(bagio.needs_repair(b) for b in found):
        return None
    return found


def episode_outcome(out: Path, job: EpisodeJob) -> dict | None:
    """The job's episode as recorded in its bag (None unless the bag is finalized and holds an
    END of exactly this episode): status, success, reason, steps, chunks and the last end-effector
    position (a fingerprint of the whole trajectory: equal outcomes mean equal rollouts)."""
    from oat_ros.eval import bags as bagio
    found = _finalized_bags(job_dir(out, job))
    if not found:
        return None
    try:
        data = bagio.load(found, repair=False)
    except Exception:
        return None
    # exactly this job's one episode, finished (anything else - e.g. an event of another graph
    # that leaked in - makes the bag suspect, and the job is redone)
    if len(data.episodes) != 1 or not data.episodes[0].completed:
        return None
    ep = data.episodes[0]
    if ep.run_id != job.run_id or (ep.suite, ep.task_index, ep.init_state_index, ep.seed) != job.key:
        return None
    eef, last = None, None
    try:  # the pose with the latest sim-time stamp (lockstep: independent of delivery timing)
        for bag in found:
            for _, _, _, msg in bagio.read_messages(bag, {POSE_TYPE}):
                stamp = (int(msg.header.stamp.sec), int(msg.header.stamp.nanosec))
                if last is None or stamp >= last:
                    p, last = msg.pose.position, stamp
                    eef = [round(float(p.x), 6), round(float(p.y), 6), round(float(p.z), 6)]
    except Exception:
        eef = None
    return {"job": job.name, "setting": job.setting.label, "suite": ep.suite, "task_index": ep.task_index,
            "init_state_index": ep.init_state_index, "seed": ep.seed, "status": ep.status,
            "success": ep.success, "reason": ep.reason, "steps": ep.step, "max_steps": ep.max_steps,
            "chunks_executed": ep.chunks_executed, "n_chunks": ep.n_chunks, "final_eef_pos": eef}


def mark_complete(out: Path, job: EpisodeJob) -> dict | None:
    """Check the bag; if it holds the finished episode, write complete.json and return the outcome."""
    outcome = episode_outcome(out, job)
    if outcome is not None:
        write_json(job_dir(out, job) / COMPLETE_NAME, outcome)
    return outcome


def is_complete(out: Path, job: EpisodeJob) -> bool:
    """The job's bag is finalized and holds the END of its episode.

    Fast path: complete.json (written only after that check) next to a finalized bag. A bag
    that is complete but has no complete.json yet (the attempt died just after the recorder
    closed the bag) is checked in full and marked."""
    d = job_dir(out, job)
    if not d.is_dir():
        return False
    if (d / COMPLETE_NAME).is_file():
        return _finalized_bags(d) is not None
    return mark_complete(out, job) is not None


def job_status(out: Path, job: EpisodeJob) -> dict:
    """{'job', 'status': complete | failed | missing, 'attempts', 'error', 'outcome'} from the job dir."""
    d = job_dir(out, job)
    record = read_json(d / JOB_NAME) or {}
    if is_complete(out, job):
        outcome = read_json(d / COMPLETE_NAME)
        return {"job": job.name, "status": "complete", "attempts": record.get("attempts"),
                "error": "", "outcome": outcome}
    if record.get("status") == "failed":
        return {"job": job.name, "status": "failed", "attempts": record.get("attempts"),
                "error": record.get("error", ""), "outcome": None}
    return {"job": job.name, "status": "missing", "attempts": record.get("attempts"), "error": "",
            "outcome": None}
