"""The evaluation runner: work list, real sim-graph runs (LIBERO), resume, reports from bags."""
import json
import subprocess
import sys

import pytest

from oat_ros.eval.runner import DecodeSetting, parse_range, work_list


def test_settings_and_ranges_parse():
    s = DecodeSetting.parse("blockwise:P=4:r=2")
    assert s.label == "blockwise-P4-r2"
    assert dict(s.params) == {"decode_mode": "blockwise", "prefix_len": "4", "refine_iters": "2"}
    assert dict(DecodeSetting.parse("ar:K=4:deadline=30").params)["deadline_ms"] == "30"
    assert parse_range("0-2,5") == [0, 1, 2, 5]
    with pytest.raises(ValueError, match="beam"):
        DecodeSetting.parse("beam:K=2")
    with pytest.raises(ValueError, match="Q=1"):
        DecodeSetting.parse("ar:Q=1")
    runs = work_list([DecodeSetting.parse("ar:K=8"), DecodeSetting.parse("ar:K=1")], "libero_object", [0, 3], [0, 1], 0)
    assert [r.name for r in runs] == ["ar-K8/libero_object-t00", "ar-K8/libero_object-t03",
                                      "ar-K1/libero_object-t00", "ar-K1/libero_object-t03"]


@pytest.mark.ros
@pytest.mark.libero
def test_runner_records_one_bag_per_run_resumes_and_reports(tmp_path, ros_domain):
    sys.path.insert(0, "test/node_scripts")
    from tiny_policy import make_tiny_policy
    policy = make_tiny_policy(tmp_path / "policy")
    _, env = ros_domain
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "oat_ros.eval.runner", "--suite", "libero_object", "--tasks", "0",
           "--init-states", "0-1", "--setting", "ar:K=8", "--setting", "ar:K=2", "--max-steps", "20",
           "--policy", str(policy), "--out", str(out)]
    first = subprocess.run(cmd + ["--limit", "1", "--no-reports"], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 runs (0 already complete, 1 to run)" in first.stdout
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "2 runs (1 already complete, 1 to run)" in second.stdout   # resumed, nothing redone
    for label, tokens in (("ar-K8", 8), ("ar-K2", 2)):
        report = json.loads((out / "reports" / label / "report.json").read_text())
        assert report["success"]["overall"]["n"] == 2          # both init states, from the bag alone
        assert report["tokens"]["histogram"]["mean"] == tokens   # the setting reached the policy node
        assert (out / "runs" / label / "libero_object-t00" / "bag").is_dir()
    comparison = json.loads((out / "reports" / "ar-K8_vs_ar-K2" / "comparison.json").read_text())
    assert comparison["paired"]["overall"]["n_pairs"] == 2     # paired by (task, init state)
