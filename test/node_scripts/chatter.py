"""Publish and subscribe on /chat for a few seconds (network-rule test helper)."""
import sys
import time

import rclpy
from std_msgs.msg import String


def main():
    name, seconds = sys.argv[1], float(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node(f"chatter_{name}")
    got = []
    pub = node.create_publisher(String, "/chat", 10)
    node.create_subscription(String, "/chat", lambda m: got.append(m.data), 10)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pub.publish(String(data=f"{name}:" + "x" * 200))
        rclpy.spin_once(node, timeout_sec=0.05)
    print(f"received {sum(not g.startswith(name + ':') for g in got)} from the other process", flush=True)
    rclpy.shutdown()


if __name__ == "__main__":
    main()
