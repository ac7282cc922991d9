"""Publish an ActionChunk built from a JSON dict until a subscriber has taken it, then exit."""
import json
import sys
import time

import rclpy
from oat_ros_interfaces.msg import ActionChunk

from oat_ros.ros.messages import fill_message

fields = json.loads(open(sys.argv[1]).read())
rclpy.init()
node = rclpy.create_node("chunk_pub")
pub = node.create_publisher(ActionChunk, "/oat/action_chunk", 10)
msg = fill_message(ActionChunk(), fields)
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not pub.get_subscription_count():
    time.sleep(0.05)
for _ in range(40):  # the first messages may be lost before discovery completes
    pub.publish(msg)
    time.sleep(0.05)
node.destroy_node()
rclpy.shutdown()
