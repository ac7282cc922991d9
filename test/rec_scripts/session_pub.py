"""Publish a synthetic evaluation session (events JSON) plus an image flood, then report.

usage: session_pub.py EVENTS.json DONE.json [--image-topic T] [--image-hz 100] [--period 0.02]

Waits until the recorder subscribed to every topic, publishes the events in order (RELIABLE,
deep history) while a thread floods the camera topic with sensor_msgs/Image (BEST_EFFORT, like
a camera driver), waits until the chunk/episode messages were acknowledged, then writes
DONE.json with what was published.
"""
import argparse
import json
import threading
import time

import rclpy
from oat_ros_interfaces.msg import ActionChunk, Episode
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from oat_ros.ros.messages import fill_message

parser = argparse.ArgumentParser()
parser.add_argument("events")
parser.add_argument("done")
parser.add_argument("--chunk-topic", default="/oat/action_chunk")
parser.add_argument("--episode-topic", default="/oat/episode")
parser.add_argument("--image-topic", default="/camera/agentview/image_raw")
parser.add_argument("--image-hz", type=float, default=100.0)
parser.add_argument("--image-size", type=int, default=64)
parser.add_argument("--period", type=float, default=0.02)
parser.add_argument("--tail", type=float, default=0.3, help="flood seconds after the events")
args = parser.parse_args()

events = json.loads(open(args.events).read())
rclpy.init()
node = rclpy.create_node("session_pub")
reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
chunk_pub = node.create_publisher(ActionChunk, args.chunk_topic, reliable)
episode_pub = node.create_publisher(Episode, args.episode_topic, reliable)
image_pub = node.create_publisher(Image, args.image_topic, qos_profile_sensor_data) \
    if args.image_hz > 0 else None

pubs = [chunk_pub, episode_pub] + ([image_pub] if image_pub else [])
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not all(p.get_subscription_count() for p in pubs):
    time.sleep(0.05)
assert all(p.get_subscription_count() for p in pubs), "recorder never subscribed"
time.sleep(0.3)  # let the reliable handshake settle (subscription matched both ways)

stop = threading.Event()
images = [0]


def flood():
    img = Image(height=args.image_size, width=args.image_size, encoding="rgb8",
                step=3 * args.image_size)
    img.data = bytes(range(256)) * (3 * args.image_size * args.image_size // 256) \
        + bytes(3 * args.image_size * args.image_size % 256)
    period = 1.0 / args.image_hz
    next_t = time.monotonic()
    while not stop.is_set():
        now = time.time_ns()
        img.header.stamp.sec, img.header.stamp.nanosec = divmod(now, 1_000_000_000)
        image_pub.publish(img)
        images[0] += 1
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))


thread = threading.Thread(target=flood) if image_pub else None
if thread:
    thread.start()
    time.sleep(0.2)
t0 = time.monotonic()
sent = {"chunks": 0, "episodes": 0}
for ev in events:
    if ev["kind"] == "chunk":
        chunk_pub.publish(fill_message(ActionChunk(), ev["fields"]))
        sent["chunks"] += 1
    else:
        episode_pub.publish(fill_message(Episode(), ev["fields"]))
        sent["episodes"] += 1
    time.sleep(args.period)
time.sleep(args.tail)
stop.set()
if thread:
    thread.join()
acked = all(p.wait_for_all_acked(Duration(seconds=10)) for p in (chunk_pub, episode_pub))
sent.update(images=images[0], acked=bool(acked), publish_s=time.monotonic() - t0)
with open(args.done, "w") as f:
    json.dump(sent, f)
node.destroy_node()
rclpy.shutdown()
