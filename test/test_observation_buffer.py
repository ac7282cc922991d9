"""ObservationBuffer: skew, history padding, time going backwards, request stamp matching."""
import pytest

from oat_ros.observation_buffer import ObservationBuffer

MS = 1_000_000
S = 1_000_000_000


def make(n_obs_steps=2, skew_ms=20, sources=("cam", "joints")):
    return ObservationBuffer(list(sources), n_obs_steps, skew_ms * MS)


def add_frame(buf, t_ns, tag, joint_offset_ns=0):
    buf.add("cam", t_ns, f"cam{tag}")
    buf.add("joints", t_ns + joint_offset_ns, f"j{tag}")


def stamps(frames):
    return [f.stamp_ns for f in frames]


def test_needs_an_anchor():
    with pytest.raises(ValueError):
        ObservationBuffer([], 2, 0)


def test_empty_buffer_says_which_source_is_missing():
    buf = make()
    frames, why = buf.observation()
    assert frames is None and "'cam'" in why
    buf.add("cam", S, "c")
    frames, why = buf.observation()
    assert frames is None and "no sample from 'joints'" in why


def test_skew_within_and_beyond_the_limit():
    buf = make(skew_ms=20)
    buf.add("cam", S, "c")
    buf.add("joints", S + 30 * MS, "late")
    frames, why = buf.observation()
    assert frames is None and "'joints'" in why and "20.0 ms" in why
    buf.add("joints", S + 35 * MS, "later")           # still too far
    assert buf.observation()[0] is None
    buf.max_skew_ns = 40 * MS                         # runtime change of the limit applies at once
    frames, _ = buf.observation()
    assert frames is not None and frames[-1].values["joints"] == "late"   # the nearest one


def test_nearest_sample_on_either_side_wins():
    buf = make(skew_ms=20)
    buf.add("joints", S - 15 * MS, "before")
    buf.add("joints", S + 5 * MS, "after")
    buf.add("joints", S + 19 * MS, "after2")
    buf.add("cam", S, "c")
    frames, _ = buf.observation()
    assert frames[-1].values == {"cam": "c", "joints": "after"}


def test_history_is_padded_with_the_oldest_frame():
    buf = make(n_obs_steps=3)
    add_frame(buf, S, "a")
    frames, why = buf.observation()
    assert why == "" and stamps(frames) == [S, S, S]
    assert [f.values["cam"] for f in frames] == ["cama"] * 3
    add_frame(buf, S + 50 * MS, "b")
    frames, _ = buf.observation()
    assert [f.values["cam"] for f in frames] == ["cama", "cama", "camb"]
    add_frame(buf, S + 100 * MS, "c")
    add_frame(buf, S + 150 * MS, "d")
    frames, _ = buf.observation()
    assert [f.values["cam"] for f in frames] == ["camb", "camc", "camd"]


def test_history_skips_incomplete_older_frames_and_newest_uses_last_complete():
    buf = make(n_obs_steps=2)
    add_frame(buf, S, "a")
    buf.add("cam", S + 50 * MS, "camb")               # no joints near b
    add_frame(buf, S + 100 * MS, "c")
    frames, _ = buf.observation()
    assert [f.values["cam"] for f in frames] == ["cama", "camc"]
    buf.add("cam", S + 150 * MS, "camd")              # newest camera frame incomplete
    frames, _ = buf.observation()
    assert [f.values["cam"] for f in frames] == ["cama", "camc"]


def test_time_going_backwards_clears_everything():
    buf = make()
    add_frame(buf, 5 * S, "old")
    epoch = buf.epoch
    buf.add("cam", 1 * S, "new")                      # simulation reset: stamps restart
    assert buf.epoch == epoch + 1
    assert buf.newest_stamp("joints") is None
    frames, why = buf.observation()
    assert frames is None and "no sample from 'joints'" in why
    buf.add("joints", 1 * S, "jnew")
    frames, _ = buf.observation()
    assert [f.values["cam"] for f in frames] == ["new", "new"]   # no frame of the old episode


def test_repeated_stamps_after_a_reset_get_a_new_frame_key():
    buf = make()
    add_frame(buf, S, "a")
    key_before = buf.observation()[0][-1].key
    assert buf.observation()[0][-1].key == key_before              # stable while nothing changes
    buf.clear()
    add_frame(buf, S, "b")                                         # same stamps, other content
    frames, _ = buf.observation()
    assert frames[-1].values["cam"] == "camb" and frames[-1].key != key_before


def test_frame_key_follows_the_samples_used():
    buf = make(skew_ms=20)
    buf.add("cam", S, "c")
    buf.add("joints", S + 10 * MS, "j1")
    k1 = buf.observation()[0][-1].key
    buf.add("joints", S + 12 * MS, "j2")              # not nearer: same frame
    assert buf.observation()[0][-1].key == k1
    buf2 = make(skew_ms=20)
    buf2.add("joints", S - 10 * MS, "j0")
    buf2.add("cam", S, "c")
    buf2.add("joints", S + 2 * MS, "j1")              # a nearer sample arrives later: new content
    frames, _ = buf2.observation()
    assert frames[-1].values["joints"] == "j1" and frames[-1].key[-1] == S + 2 * MS


def test_a_resent_sample_does_not_duplicate_its_instant():
    buf = make()
    add_frame(buf, S, "a")
    add_frame(buf, S + 50 * MS, "b")
    buf.add("cam", S + 50 * MS, "camb")               # same stamp again
    frames, _ = buf.observation()
    assert stamps(frames) == [S, S + 50 * MS]


def test_request_stamp_picks_the_nearest_anchor_within_skew():
    buf = make(skew_ms=20)
    for i, tag in enumerate("abc"):
        add_frame(buf, S + i * 50 * MS, tag)
    frames, _ = buf.observation(S + 52 * MS)          # nearest anchor: b
    assert stamps(frames) == [S, S + 50 * MS]
    frames, _ = buf.observation(S + 100 * MS)
    assert stamps(frames) == [S + 50 * MS, S + 100 * MS]
    frames, _ = buf.observation(S)                    # oldest: padded
    assert stamps(frames) == [S, S]
    frames, why = buf.observation(S + 200 * MS)       # not captured (yet)
    assert frames is None and "requested" in why and "'cam'" in why
    frames, why = buf.observation(S - 500 * MS)
    assert frames is None


def test_request_for_an_incomplete_frame_is_not_served_by_another_frame():
    buf = make(skew_ms=20)
    add_frame(buf, S, "a")
    buf.add("cam", S + 50 * MS, "camb")               # joints for b not there yet
    frames, why = buf.observation(S + 50 * MS)
    assert frames is None and "'joints'" in why
    buf.add("joints", S + 51 * MS, "jb")
    frames, _ = buf.observation(S + 50 * MS)
    assert stamps(frames) == [S, S + 50 * MS] and frames[-1].values["joints"] == "jb"


def test_depth_is_bounded():
    buf = ObservationBuffer(["cam"], 2, 0, depth=4)
    for i in range(10):
        buf.add("cam", i * S, i)
    frames, _ = buf.observation()
    assert [f.values["cam"] for f in frames] == [8, 9]
    assert buf.observation(0)[0] is None                # evicted
