"""Recorder building blocks without ROS processes: downsampling, types, QoS, bag writer."""
import json
import os
import shutil
import time

import pytest

from oat_ros.eval import bags, typestore
from oat_ros.ros import recorder_node as rn


def test_rate_limiter_downsamples_to_max_rate():
    lim = rn.RateLimiter(20.0)
    kept = [t for t in range(0, 1_000_000_000, 10_000_000) if lim.keep("cam", t)]  # 100 Hz, 1 s
    assert len(kept) == 20 and kept[1] - kept[0] == 50_000_000
    assert all(rn.RateLimiter(0).keep("cam", t) for t in range(10))  # 0 = keep all
    assert lim.keep("other", 5)  # per topic


def test_parse_topic_types():
    assert rn.parse_topic_types(["/a=pkg/msg/A", " ", "b = pkg/msg/B"]) == \
        {"/a": "pkg/msg/A", "b": "pkg/msg/B"}
    with pytest.raises(ValueError):
        rn.parse_topic_types(["/a:pkg/msg/A"])


@pytest.mark.parametrize("installed", [True, False])
def test_interface_types_and_hashes(monkeypatch, installed):
    """Definitions from the installed share dir, or the repo msg/ dir: same RIHS01 as rosidl."""
    if not installed:
        monkeypatch.setattr(typestore, "share_prefixes", lambda: [])
        assert typestore.find_msg_file(typestore.EPISODE_TYPE).parent == typestore.REPO_MSG_DIR
    store = typestore.make_typestore()
    share = os.path.join(os.environ["VIRTUAL_ENV"], "share", "oat_ros_interfaces", "msg")
    for name in ("ActionChunk", "Episode"):
        meta = json.loads(open(os.path.join(share, f"{name}.json")).read())
        want = meta["type_hashes"][0]["hash_string"]
        assert store.hash_rihs01(f"oat_ros_interfaces/msg/{name}") == want


def test_qos_to_rosbags():
    from rclpy.qos import qos_profile_sensor_data
    from rosbags.interfaces import QosDurability, QosReliability

    q = rn.qos_to_rosbags(qos_profile_sensor_data)
    assert q.reliability == QosReliability.BEST_EFFORT and q.depth == 5
    assert q.durability == QosDurability.VOLATILE


def _stream(topic="/oat/episode", msgtype=typestore.EPISODE_TYPE):
    return rn._Stream(topic, msgtype, critical=True, image=False)


def _episode_cdr(store, i):
    from rec_scripts.bagmaker import build
    from rec_scripts.synthetic import episode_fields

    msg = build(store, typestore.EPISODE_TYPE, episode_fields("r", i, 0))
    return store.serialize_cdr(msg, typestore.EPISODE_TYPE)


@pytest.mark.parametrize("storage,compression", [("mcap", "none"), ("mcap", "zstd"),
                                                 ("sqlite3", "none")])
def test_flushed_data_survives_a_kill(tmp_path, storage, compression):
    store = typestore.make_typestore()
    w = rn.BagWriter(tmp_path / "live", storage, store, compression=compression)
    assert (tmp_path / "live" / bags.LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert bags.bag_is_live(tmp_path / "live") == os.getpid()
    s = _stream()
    for i in range(5):
        w.write(s, 1_000 + i, _episode_cdr(store, i))
    w.flush()
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    src = next(p for p in (tmp_path / "live").iterdir() if p.suffix in (".mcap", ".db3"))
    shutil.copy(src, crashed / f"crashed{src.suffix}")  # what a SIGKILL now leaves
    w.close({"x": 1})
    assert not (tmp_path / "live" / bags.LOCK_NAME).exists()
    meta = (tmp_path / "live" / "metadata.yaml").read_text()
    assert "oat_ros.recorder.summary" in meta
    bags.repair_bag(crashed)
    assert bags.topic_counts(crashed) == {"/oat/episode": 5}


def test_split_parts(tmp_path):
    store = typestore.make_typestore()
    w = rn.BagWriter(tmp_path / "run", "mcap", store, split_max_duration_s=0.05)
    s = _stream()
    for i in range(3):
        w.write(s, 1_000 + i, _episode_cdr(store, i))
        time.sleep(0.06)
    w.close()
    parts = bags.find_bags(tmp_path / "run")
    assert [p.name for p in parts] == ["run_0000", "run_0001", "run_0002"]
    assert all(bags.topic_counts(p) == {"/oat/episode": 1} for p in parts)
    assert len(bags.load([tmp_path / "run"]).episodes) == 3
