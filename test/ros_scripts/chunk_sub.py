"""Receive one ActionChunk and write it as JSON (typed, and the raw CDR size) to argv[1]."""
import json
import sys

import rclpy
from oat_ros_interfaces.msg import ActionChunk

from oat_ros.ros.messages import message_to_dict

rclpy.init()
node = rclpy.create_node("chunk_sub")
received = []
node.create_subscription(ActionChunk, "/oat/action_chunk", received.append, 10)
while rclpy.ok() and not received:
    rclpy.spin_once(node, timeout_sec=0.1)
with open(sys.argv[1], "w") as f:
    json.dump(message_to_dict(received[0]), f)
node.destroy_node()
rclpy.shutdown()
