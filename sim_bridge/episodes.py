"""Episode plans of the sim bridge, ROS-free and LIBERO-free (only the suite tables).

A plan is the list of episodes the bridge runs, built from its parameters:

* ``episodes`` (string list) wins if non-empty: each entry is ``"suite:task:init"``,
  ``"task:init"`` (suite = the ``suite`` parameter) or ``"task"`` (init = ``init_state_index``).
* otherwise tasks = ``task_indices`` (or ``[task_index]`` if empty), and for every task
  ``N`` episodes, ``N = num_episodes`` (0: ``len(init_states)`` if given, else 1). Episode ``j``
  of a task uses init state ``init_states[j % len(init_states)]`` if ``init_states`` is given,
  else ``(init_state_index + j) % 50``, or a seeded reset if ``init_state_index == -1``.
* a seeded reset (init -1) uses seed ``seed + j`` (``j`` = the episode's position among the
  task's episodes, or in the ``episodes`` list), like OAT's ``1000 + i``.
* ``max_steps`` 0 = the suite's default (OpenVLA: spatial 220, object 280, goal 300,
  libero_10 520, libero_90 400).
"""
from __future__ import annotations

from typing import NamedTuple

from sim_bridge.libero_env import (NUM_INIT_STATES, SUITES, check_task, default_max_steps,
                                   task_uid)


class EpisodeSpec(NamedTuple):
    suite: str
    task_index: int
    init_state_index: int      # -1 = seeded reset
    seed: int
    max_steps: int

    @property
    def task_uid(self) -> int:
        return task_uid(self.suite, self.task_index)


def _max_steps(suite: str, max_steps: int) -> int:
    return int(max_steps) if int(max_steps) > 0 else default_max_steps(suite)


def parse_episode_entry(entry: str, suite: str, init_state_index: int) -> tuple[str, int, int]:
    """'suite:task:init' | 'task:init' | 'task' -> (suite, task, init); ValueError if bad."""
    parts = [p.strip() for p in str(entry).split(":")]
    try:
        if len(parts) == 3:
            suite, task, init = parts[0], int(parts[1]), int(parts[2])
        elif len(parts) == 2:
            task, init = int(parts[0]), int(parts[1])
        elif len(parts) == 1 and parts[0]:
            task, init = int(parts[0]), int(init_state_index)
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"episode entry '{entry}': expected 'suite:task:init', 'task:init' "
                         "or 'task' with integer task/init") from None
    check_task(suite, task, init)
    return suite, task, init


def build_plan(p: dict) -> list[EpisodeSpec]:
    """The episodes described by the parameter dict `p` (keys: suite, task_index,
    init_state_index, seed, max_steps, episodes, task_indices, init_states, num_episodes).
    Raises ValueError naming the bad parameter."""
    suite = p["suite"]
    if suite not in SUITES:
        raise ValueError(f"suite '{suite}' not in {', '.join(SUITES)}")
    if int(p["max_steps"]) < 0:
        raise ValueError(f"max_steps {p['max_steps']} < 0 (0 = suite default)")
    seed = int(p["seed"])
    episodes = list(p.get("episodes") or [])
    if episodes:
        plan = []
        for j, entry in enumerate(episodes):
            s, t, i = parse_episode_entry(entry, suite, p["init_state_index"])
            plan.append(EpisodeSpec(s, t, i, seed + j if i < 0 else seed,
                                    _max_steps(s, p["max_steps"])))
        return plan
    tasks = [int(t) for t in (p.get("task_indices") or [p["task_index"]])]
    inits = [int(i) for i in (p.get("init_states") or [])]
    base_init = int(p["init_state_index"])
    n = int(p.get("num_episodes") or 0)
    if n < 0:
        raise ValueError(f"num_episodes {n} < 0")
    n = n or (len(inits) if inits else 1)
    for t in tasks:
        check_task(suite, t)
    for i in inits + [base_init]:
        check_task(suite, tasks[0], i)
    plan = []
    for t in tasks:
        for j in range(n):
            if inits:
                init = inits[j % len(inits)]
            elif base_init >= 0:
                init = (base_init + j) % NUM_INIT_STATES
            else:
                init = -1
            plan.append(EpisodeSpec(suite, t, init, seed + j if init < 0 else seed,
                                    _max_steps(suite, p["max_steps"])))
    return plan


def successor(spec: EpisodeSpec) -> EpisodeSpec:
    """The episode `~/next_episode` starts when the plan is exhausted: next init state of the
    same task (mod 50), or the next seed for seeded resets."""
    if spec.init_state_index < 0:
        return spec._replace(seed=spec.seed + 1)
    return spec._replace(init_state_index=(spec.init_state_index + 1) % NUM_INIT_STATES)
