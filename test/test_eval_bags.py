"""Eval from bags (no ROS processes): decoding, report numbers, comparison, crash repair."""
import json
import shutil
import subprocess
import sys
import pytest

from oat_ros.eval import bags, cli
from rec_scripts.bagmaker import write_bag
from rec_scripts.synthetic import expected_numbers, make_session

SUCC_A = (1, 0, 1, 1, 0, 1)
SUCC_B = (1, 1, 1, 0, 1, 1)


def test_bag_decodes_every_field(tmp_path):
    events = make_session()
    write_bag(tmp_path / "bag", events)
    got = list(bags.read_messages(tmp_path / "bag"))
    assert len(got) == len(events)
    for (topic, msgtype, _, msg), ev in zip(got, events):
        assert msgtype.endswith("ActionChunk" if ev["kind"] == "chunk" else "Episode")
        assert topic == ("/oat/action_chunk" if ev["kind"] == "chunk" else "/oat/episode")
        assert set(bags.message_to_dict(msg)) == set(ev["fields"])  # every field was sent
        assert _same(bags.message_to_dict(msg), ev["fields"])


def _same(got, sent):
    for key, value in sent.items():
        if isinstance(value, dict):
            _same(got[key], value)
        elif isinstance(value, list):
            assert got[key] == pytest.approx(value), key
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-6), key
        else:
            assert got[key] == value, key
    return True


def test_report_numbers_match_hand_computation(tmp_path):
    events = make_session(successes=SUCC_A, abort_last=False)
    write_bag(tmp_path / "bag", events)
    out = tmp_path / "report"
    assert cli.main(["report", str(tmp_path / "bag"), "--out", str(out)]) == 0
    res = json.loads((out / "report.json").read_text())
    exp = expected_numbers(events)
    assert res["success"]["overall"]["n"] == exp["n"] == len(SUCC_A)
    assert res["success"]["overall"]["successes"] == exp["successes"] == sum(SUCC_A)
    assert {(r["suite"], r["task_index"]): (r["successes"], r["n"])
            for r in res["success"]["per_task"]} == exp["per_task"]
    for k, v in exp["lat"].items():
        assert res["latency_ms"]["all"][k] == pytest.approx(v), k
    assert res["observation_age_ms"]["p50"] == pytest.approx(exp["age_p50"])
    assert res["deadline"]["rate"] == pytest.approx(exp["miss"])
    hist = res["tokens"]["histogram"]
    assert {v: c for v, c in zip(hist["values"], hist["counts"]) if c} == dict(exp["tokens"])
    assert res["chunks"]["total"] == exp["n_chunks"]
    assert res["chunks"]["outside_episodes"] == 2  # make_session(chunks_before=2)
    assert res["runs"]["run_a"]["decode"] == {"ar K=8": exp["n_chunks"]}
    for name in ("report.md", "success_per_task.png", "latency_cdf.png", "tokens_per_chunk.png"):
        assert (out / name).stat().st_size > 500, name
    md = (out / "report.md").read_text()
    assert "Overall success: 66.7 %" in md and "p99" in md


def test_paired_comparison_from_bags(tmp_path):
    write_bag(tmp_path / "a", make_session("run_a", "ar", SUCC_A))
    write_bag(tmp_path / "b", make_session("run_b", "blockwise", SUCC_B))
    out = tmp_path / "cmp"
    assert cli.main(["compare", "--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"),
                     "--out", str(out), "--no-plots"]) == 0
    res = json.loads((out / "comparison.json").read_text())
    assert res["labels"] == {"a": "ar K=8", "b": "blockwise P=4 r=1"}
    p = res["paired"]["overall"]
    assert p["n_pairs"] == 6 and p["delta"] == pytest.approx((sum(SUCC_B) - sum(SUCC_A)) / 6)
    assert (p["a_only"], p["b_only"]) == (1, 2)  # episode 3 vs episodes 1 and 4
    # tasks cycle over 3 tasks: episodes (0,3) -> task 0, (1,4) -> task 1, (2,5) -> task 2
    deltas = {(r["suite"], r["task_index"]): r["delta"] for r in res["paired"]["per_task"]}
    assert deltas == {("libero_object", 0): -0.5, ("libero_object", 1): 1.0,
                      ("libero_spatial", 3): 0.0}
    assert res["chunks"]["delta"]["latency_ms"]["p50"] == pytest.approx(0.25)  # blockwise +0.25
    assert "delta" in (out / "comparison.md").read_text()


def _crash_copy(events, tmp_path, storage):
    """A bag as a SIGKILL would leave it after the recorder's last periodic flush."""
    writer = write_bag(tmp_path / "live", events, storage=storage, close=False)
    st = writer.storage
    if storage == "mcap":
        st.close_chunk()
        st.bio.flush()
    else:
        st.conn.commit()
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    src = next(p for p in (tmp_path / "live").iterdir() if p.suffix in (".mcap", ".db3"))
    shutil.copy(src, crashed / f"crashed{src.suffix}")
    writer.close()
    return crashed


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_crash_left_bag_is_repaired(tmp_path, storage):
    events = make_session()
    crashed = _crash_copy(events, tmp_path, storage)
    assert bags.needs_repair(crashed)
    assert cli.main(["report", str(crashed), "--out", str(tmp_path / "r"), "--no-repair",
                     "--no-plots"]) == 2
    data = bags.load([crashed])  # repairs on its own
    assert (crashed / "metadata.yaml").is_file()
    assert len(data.chunks) == sum(e["kind"] == "chunk" for e in events)
    assert len(data.episodes) == 6
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert (crashed / f"crashed{suffix}.crashed").is_file()
    meta = (crashed / "metadata.yaml").read_text()
    assert "version: 9" in meta and "RIHS01_" in meta and "serialization_format: cdr" in meta


def test_truncated_mcap_keeps_complete_chunks(tmp_path):
    """SIGKILL while a chunk record was being written: every earlier chunk survives."""
    events = make_session()
    writer = write_bag(tmp_path / "live", events, close=False, flush_at=(19, len(events) - 1))
    first, second = writer.flush_sizes
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    data = (tmp_path / "live" / "live.mcap").read_bytes()
    (crashed / "crashed.mcap").write_bytes(data[:(first + second) // 2])  # mid second chunk
    writer.close()
    assert cli.main(["repair", str(crashed), "--no-backup"]) == 0
    assert sum(bags.topic_counts(crashed).values()) == 20
    assert not (crashed / "crashed.mcap.crashed").exists()
    assert cli.main(["repair", str(crashed)]) == 0  # finalized bags are left alone


def test_split_parts_and_no_ros_import(tmp_path):
    """A directory of bag parts is one dataset; the eval never imports rclpy."""
    events = make_session()
    write_bag(tmp_path / "run" / "run_0000", events[:10])
    write_bag(tmp_path / "run" / "run_0001", events[10:], t0_ns=1_700_000_000_000_000_000
              + 10 * 20_000_000)
    code = ("import sys; from oat_ros.eval import bags, metrics; "
            f"d = bags.load([{str(tmp_path / 'run')!r}]); r = metrics.evaluate(d); "
            "assert 'rclpy' not in sys.modules; "
            "print(r['episodes']['completed'], r['chunks']['total'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["6", str(sum(e["kind"] == "chunk" for e in events))]


def test_live_bag_is_not_repaired(tmp_path):
    crashed = _crash_copy(make_session(), tmp_path, "mcap")
    (crashed / bags.LOCK_NAME).write_text(bags.lock_text())  # "our" recorder is alive
    with pytest.raises(bags.BagError, match="being recorded"):
        bags.repair_bag(crashed)
    assert cli.main(["report", str(crashed), "--out", str(tmp_path / "r"), "--no-plots"]) == 2
    (crashed / bags.LOCK_NAME).write_text("1 1\n")  # pid 1 exists but started at another time
    assert bags.bag_is_live(crashed) is None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (crashed / bags.LOCK_NAME).write_text(f"{dead.pid}\n")
    assert bags.bag_is_live(crashed) is None
    assert bags.repair_bag(crashed).messages == len(make_session())
    assert not (crashed / bags.LOCK_NAME).exists()


def test_summary_text(tmp_path):
    from oat_ros.eval.summary import summarize_bag

    write_bag(tmp_path / "out" / "oat_1", make_session(successes=SUCC_A))
    text = summarize_bag(tmp_path / "out")
    assert "success: 4/6 = 66.7 %" in text and "latency ms p50/p95/p99/max" in text
    (tmp_path / "empty").mkdir()
    assert "no bag" in summarize_bag(tmp_path / "empty")
