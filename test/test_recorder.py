"""The recorder node, as a real process: nothing lost under a camera flood, clean SIGINT /
SIGTERM finalization, a SIGKILLed recording that repairs, and bags the eval reads alone."""
import json
import os
import signal
import time
import uuid
from collections import Counter

import pytest

from oat_ros.eval import bags, cli
from rec_scripts.synthetic import expected_numbers, make_session
from ros_testing import read_json

pytestmark = pytest.mark.ros

CHUNK, EPISODE, IMAGE = "/oat/action_chunk", "/oat/episode", "/camera/agentview/image_raw"
CHUNK_T = "oat_ros_interfaces/msg/ActionChunk"
EPISODE_T = "oat_ros_interfaces/msg/Episode"


def _run_session(tmp_path, env, spawn, bag, params=(), pub_args=(), **session):
    """Recorder + session publisher on topics under a unique prefix (other test sessions on
    this machine may share the ROS domain); returns (recorder, events, publisher report)."""
    prefix = f"/t{uuid.uuid4().hex[:8]}"
    topics = {name: prefix + name for name in (CHUNK, EPISODE, IMAGE)}
    events = make_session(**session)
    (tmp_path / "events.json").write_text(json.dumps(events))
    args = ["-m", "oat_ros.ros.recorder_node", "--ros-args", "-p", f"bag_path:={bag}",
            "-p", "flush_period_s:=0.2", "-p", f"topics:=[{','.join(topics.values())}]",
            "-p", f"topic_types:=[{topics[CHUNK]}={CHUNK_T},{topics[EPISODE]}={EPISODE_T}]"]
    for p in params:
        args += ["-p", p]
    rec = spawn(args, env, "recorder")
    pub = spawn(["test/rec_scripts/session_pub.py", str(tmp_path / "events.json"),
                 str(tmp_path / "done.json"), "--chunk-topic", topics[CHUNK],
                 "--episode-topic", topics[EPISODE], "--image-topic", topics[IMAGE],
                 *pub_args], env, "pub")
    assert pub.wait(90) == 0, pub.output() + rec.output()
    done = read_json(tmp_path / "done.json")
    assert done["acked"], done
    assert done["chunks"] == sum(e["kind"] == "chunk" for e in events)
    done["topics"] = topics
    return rec, events, done


def _counts(bag, done):
    """Message counts per default topic name (CHUNK, EPISODE, IMAGE) of one bag."""
    by_topic = bags.topic_counts(bag)
    return Counter({name: by_topic.get(topic, 0) for name, topic in done["topics"].items()})


def _same(got, sent, path=""):
    for key, value in sent.items():
        if isinstance(value, dict):
            _same(got[key], value, f"{path}{key}.")
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-6), path + key
        elif isinstance(value, list):
            assert got[key] == pytest.approx(value), path + key
        else:
            assert got[key] == value, path + key


def _share_hash(name):
    share = os.path.join(os.environ["VIRTUAL_ENV"], "share", "oat_ros_interfaces", "msg")
    meta = json.loads(open(os.path.join(share, f"{name}.json")).read())
    return meta["type_hashes"][0]["hash_string"]


def test_sigint_under_image_flood_loses_nothing(tmp_path, ros_domain, spawn):
    _, env = ros_domain
    bag = tmp_path / "bag"
    rec, events, done = _run_session(tmp_path, env, spawn, bag,  # ~3 s of 100 Hz 128x128 rgb8
                                     pub_args=["--image-size", "128", "--period", "0.05"])
    code = rec.stop(signal.SIGINT)
    log = rec.log_path.read_text()
    assert code == 0, log
    assert "Closed bag" in log and "LOST" not in log, log

    # finalized: metadata v9, hashes, QoS, no lock left
    assert (bag / "metadata.yaml").is_file() and not (bag / bags.LOCK_NAME).exists()
    meta = (bag / "metadata.yaml").read_text()
    assert "version: 9" in meta and "storage_identifier: mcap" in meta
    assert _share_hash("ActionChunk") in meta and _share_hash("Episode") in meta
    counts = _counts(bag, done)
    assert sum(bags.topic_counts(bag).values()) == sum(counts.values())  # nothing else
    assert counts[CHUNK] == done["chunks"]
    assert counts[EPISODE] == done["episodes"]
    images = counts[IMAGE]
    assert 0.5 * done["images"] <= images <= done["images"], (images, done)

    # every field of every chunk / episode message decodes to what was sent, in order
    sent = {"chunk": [e["fields"] for e in events if e["kind"] == "chunk"],
            "episode": [e["fields"] for e in events if e["kind"] == "episode"]}
    got = {"chunk": [], "episode": []}
    for _, msgtype, _, msg in bags.read_messages(bag, {CHUNK_T, EPISODE_T}):
        got["chunk" if msgtype == CHUNK_T else "episode"].append(bags.message_to_dict(msg))
    for kind in ("chunk", "episode"):
        assert len(got[kind]) == len(sent[kind])
        for g, s in zip(got[kind], sent[kind]):
            _same(g, s)
    image = next(m for _, _, _, m in bags.read_messages(bag, {"sensor_msgs/msg/Image"}))
    assert (image.width, image.height, image.data.size) == (128, 128, 128 * 128 * 3)

    # the report computed from the bag alone equals the hand computation
    out = tmp_path / "report"
    assert cli.main(["report", str(bag), "--out", str(out), "--no-plots"]) == 0
    res = json.loads((out / "report.json").read_text())
    exp = expected_numbers(events)
    assert (res["success"]["overall"]["successes"], res["success"]["overall"]["n"]) == \
        (exp["successes"], exp["n"])
    assert {(r["suite"], r["task_index"]): (r["successes"], r["n"])
            for r in res["success"]["per_task"]} == exp["per_task"]
    for k, v in exp["lat"].items():
        assert res["latency_ms"]["all"][k] == pytest.approx(v), k
    assert res["deadline"]["rate"] == pytest.approx(exp["miss"])
    assert res["chunks"]["in_episodes"] == exp["n_chunks"] - 2


def test_sigkill_leaves_a_repairable_bag(tmp_path, ros_domain, spawn):
    """SIGKILL mid-recording, with 1 s bag parts and 20 Hz image downsampling: the finished
    parts are bags, the last part repairs, and together they hold every chunk and episode."""
    _, env = ros_domain
    bag = tmp_path / "bag"
    rec, events, done = _run_session(
        tmp_path, env, spawn, bag,
        params=["image_topics_max_rate_hz:=20.0", "split_max_duration_s:=1.0"],
        successes=(1, 0, 1), chunks_per_episode=3)
    time.sleep(1.0)  # > flush_period_s: everything received is on disk
    rec.popen.kill()
    rec.popen.wait(10)
    parts = bags.find_bags(bag)
    assert len(parts) >= 2 and all(p.parent == bag for p in parts)
    assert [bags.needs_repair(p) for p in parts] == [False] * (len(parts) - 1) + [True]
    assert cli.main(["repair", str(bag)]) == 0  # repairs the last part, leaves the others
    counts = Counter()
    for part in parts:
        counts.update(_counts(part, done))
    assert counts[CHUNK] == done["chunks"]
    assert counts[EPISODE] == done["episodes"]
    images = counts[IMAGE]
    max_images = done["publish_s"] * 20 + 5  # downsampled to <= 20 Hz
    assert 1 <= images <= max_images < done["images"], (images, done)
    data = bags.load([bag])
    assert [e.status for e in data.episodes] == ["success", "failure", "success"]
    assert len(data.chunks) == done["chunks"]


def test_sqlite3_sigterm_finalizes(tmp_path, ros_domain, spawn):
    _, env = ros_domain
    bag = tmp_path / "bag"
    rec, events, done = _run_session(tmp_path, env, spawn, bag, params=["storage:=sqlite3"],
                                     pub_args=["--image-hz", "0"], successes=(0, 1),
                                     chunks_per_episode=2, chunks_before=0)
    code = rec.stop(signal.SIGTERM)
    assert code == 0, rec.log_path.read_text()
    assert (bag / "bag.db3").is_file() and (bag / "metadata.yaml").is_file()
    assert bags.topic_counts(bag) == {done["topics"][CHUNK]: done["chunks"],
                                      done["topics"][EPISODE]: done["episodes"]}
    data = bags.load([bag])
    assert [e.status for e in data.episodes] == ["failure", "success"]
    assert [c.seq for c in data.chunks] == [e["fields"]["seq"] for e in events
                                            if e["kind"] == "chunk"]
