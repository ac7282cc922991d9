"""Assemble policy observations from independently arriving, stamped sensor samples.

No ROS, no torch: stamps are integer nanoseconds (capture times), values numpy arrays.

A *frame* is one observation instant: the anchor source (the first camera) at stamp t, plus
every other source's sample nearest to t within `max_skew_ns`. The policy sees the last
`n_obs_steps` complete frames (oldest first); right after a reset, when fewer exist, the
oldest available frame is repeated, as OAT does at the start of an episode. Samples whose
stamp goes backwards (simulation reset) clear the buffer.

Every frame has a `key` that changes whenever its content could: the buffer's epoch (+1 per
clear, so repeated stamps after a reset never match a frame of the previous episode) and the
stamp of every sample it uses. Callers may cache per-frame results under it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass
class Frame:
    stamp_ns: int                     # anchor (first camera) capture stamp
    values: dict                      # source name -> value
    key: tuple = ()                   # (epoch, stamp of each source's sample): same key => same content


class ObservationBuffer:
    def __init__(self, sources: list[str], n_obs_steps: int, max_skew_ns: int, depth: int = 64):
        if not sources:
            raise ValueError("at least one source (the anchor camera) is needed")
        self.sources = list(sources)
        self.anchor = self.sources[0]
        self.n_obs_steps = n_obs_steps
        self.max_skew_ns = max_skew_ns
        self._samples = {s: deque(maxlen=depth) for s in self.sources}
        self.epoch = 0                # +1 per clear()

    def clear(self):
        for q in self._samples.values():
            q.clear()
        self.epoch += 1

    def add(self, source: str, stamp_ns: int, value):
        q = self._samples[source]
        if q and stamp_ns < q[-1][0]:
            self.clear()  # time went backwards: a new episode / restarted clock
        elif q and stamp_ns == q[-1][0]:
            q[-1] = (stamp_ns, value)  # a re-sent sample replaces, never duplicates, its instant
            return
        q.append((stamp_ns, value))

    def newest_stamp(self, source: str) -> int | None:
        q = self._samples[source]
        return q[-1][0] if q else None

    def _nearest(self, source: str, stamp_ns: int):
        best = None
        for s, v in reversed(self._samples[source]):
            d = abs(s - stamp_ns)
            if d <= self.max_skew_ns and (best is None or d < best[0]):
                best = (d, s, v)
            if s < stamp_ns - self.max_skew_ns:
                break
        return None if best is None else best[1:]

    def frame_at(self, stamp_ns: int) -> tuple[Frame | None, str]:
        """The frame anchored at stamp_ns, or (None, why not)."""
        values, stamps = {}, []
        for source in self.sources:
            found = self._nearest(source, stamp_ns)
            if found is None:
                newest = self.newest_stamp(source)
                if newest is None:
                    return None, f"no sample from '{source}' yet"
                return None, (f"no '{source}' sample within {self.max_skew_ns / 1e6:.1f} ms of "
                              f"{stamp_ns / 1e9:.3f} s (newest {newest / 1e9:.3f} s)")
            stamps.append(found[0])
            values[source] = found[1]
        return Frame(stamp_ns, values, (self.epoch, *stamps)), ""

    def observation(self, stamp_ns: int | None = None) -> tuple[list[Frame] | None, str]:
        """n_obs_steps frames ending at the anchor frame nearest to stamp_ns (None = newest
        complete frame), oldest first; or (None, why not)."""
        anchors = [s for s, _ in self._samples[self.anchor]]
        if not anchors:
            return None, f"no sample from '{self.anchor}' yet"
        if stamp_ns is None:
            newest_error = ""
            for s in reversed(anchors):
                frame, why = self.frame_at(s)
                if frame is not None:
                    break
                newest_error = newest_error or why
            else:
                return None, newest_error
        else:
            near = min(anchors, key=lambda s: abs(s - stamp_ns))
            if abs(near - stamp_ns) > self.max_skew_ns:
                return None, (f"no '{self.anchor}' sample within {self.max_skew_ns / 1e6:.1f} ms of "
                              f"the requested {stamp_ns / 1e9:.3f} s")
            frame, why = self.frame_at(near)
            if frame is None:
                return None, why
        frames = [frame]
        for s in reversed([a for a in anchors if a < frame.stamp_ns]):
            if len(frames) == self.n_obs_steps:
                break
            older, _ = self.frame_at(s)
            if older is not None:
                frames.append(older)
        frames.reverse()
        while len(frames) < self.n_obs_steps:
            frames.insert(0, frames[0])
        return frames, ""
