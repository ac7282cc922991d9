"""The network rule: with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, two ROS processes that talk
to each other send every UDP datagram to a loopback address (no multicast, nothing to eth0).

Fast DDS still *binds* a socket on every interface; this checks, with strace, where it *sends*.
"""
from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import sys

import pytest

from ros_testing import REPO, Proc, next_domain_id, ros_env

pytestmark = pytest.mark.ros
CHATTER = str(REPO / "test" / "node_scripts" / "chatter.py")
ADDR = re.compile(r'sin6?_addr=inet_pton\(AF_INET6?, "([^"]+)"\)|sin_addr=inet_addr\("([^"]+)"\)')


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt install strace)")
def test_dds_sends_only_to_loopback(tmp_path):
    env = ros_env(next_domain_id())
    other = Proc([CHATTER, "a", "6"], env, tmp_path / "a.log")
    trace = tmp_path / "strace.txt"
    try:
        out = subprocess.run(["strace", "-f", "-qq", "-e", "trace=sendto,sendmsg,sendmmsg",
                              "-o", str(trace), sys.executable, CHATTER, "b", "5"],
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        other.stop()
    received = re.search(r"received (\d+) from the other process", out.stdout)
    assert received and int(received.group(1)) > 0, f"the processes never talked:\n{out.stdout}\n{out.stderr}"
    dests = [ipaddress.ip_address(a or b) for a, b in ADDR.findall(trace.read_text())]
    assert dests, "strace saw no UDP send at all"
    outside = sorted({str(d) for d in dests if not d.is_loopback})
    assert not outside, f"DDS sent to non-loopback addresses {outside}"
