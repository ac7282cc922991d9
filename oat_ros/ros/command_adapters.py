"""ROS messages for the chunk executor's commands (the math is in oat_ros.executor_adapters).

  joint_trajectory  trajectory_msgs/JointTrajectory: joint_names, ONE point (positions,
                    time_from_start = trajectory_time_from_start_s or one control period),
                    header.stamp = 0 ("start on receipt": a joint_trajectory_controller drops
                    points of a trajectory stamped in the past, and this does not depend on
                    the two machines' clocks).
  twist             geometry_msgs/TwistStamped (stamp = tick time, frame = command_frame).
  pose              geometry_msgs/PoseStamped  (stamp = tick time, frame = command_frame).
  gripper           std_msgs/Float64MultiArray: gripper_joint_count copies of the gripper
                    position (a forward_command_controller / JointGroupPositionController).
"""
from __future__ import annotations

from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import PoseStamped, TwistStamped
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from oat_ros.executor_adapters import Command

MESSAGE_TYPES = {"joint_trajectory": JointTrajectory, "twist": TwistStamped, "pose": PoseStamped}


def time_msg(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def duration_msg(seconds: float) -> Duration:
    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def arm_message(cmd: Command, joint_names, stamp_ns: int, frame_id: str,
                time_from_start_s: float):
    """The arm command message for `cmd` (type per cmd.output)."""
    if cmd.output == "joint_trajectory":
        msg = JointTrajectory()
        msg.joint_names = list(joint_names)
        point = JointTrajectoryPoint()
        point.positions = [float(x) for x in cmd.positions]
        point.time_from_start = duration_msg(time_from_start_s)
        msg.points = [point]
        return msg
    if cmd.output == "twist":
        msg = TwistStamped()
        msg.header.stamp, msg.header.frame_id = time_msg(stamp_ns), frame_id
        t = msg.twist
        t.linear.x, t.linear.y, t.linear.z = (float(v) for v in cmd.linear)
        t.angular.x, t.angular.y, t.angular.z = (float(v) for v in cmd.angular)
        return msg
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = time_msg(stamp_ns), frame_id
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in cmd.position)
    q.x, q.y, q.z, q.w = (float(v) for v in cmd.orientation)
    return msg


def gripper_message(position: float, joint_count: int) -> Float64MultiArray:
    return Float64MultiArray(data=[float(position)] * int(joint_count))
