"""LIBERO simulation graph: policy node + sim bridge + recorder, parameters from config/oat_ros.yaml.

    ros2 launch oat_ros sim.launch.py [params_file:=my.yaml] [bag_dir:=runs/bags]

Where `ros2 launch` is not installed (ROS 2 from PyPI wheels) the same graph starts with
`oat-ros-bringup sim` (oat_ros/ros/bringup.py) from the same YAML.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("oat_ros"), "config", "oat_ros.yaml")
    params = LaunchConfiguration("params_file")
    bag_dir = LaunchConfiguration("bag_dir")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS 2 parameter YAML for every node"),
        DeclareLaunchArgument("bag_dir", default_value="runs/bags",
                              description="where the recorder writes its bag"),
        Node(package="oat_ros", executable="recorder", name="recorder", output="screen",
             parameters=[params, {"output_dir": bag_dir}]),
        Node(package="oat_ros", executable="policy_node", name="policy_node", output="screen",
             parameters=[params, {"use_sim_time": True, "trigger": "request"}]),
        Node(package="oat_ros", executable="sim_bridge", name="sim_bridge", output="screen",
             parameters=[params]),
    ])
