"""oat_ros: run OAT (Ordered Action Tokenization) robot policies under ROS 2.

The package root is ROS-free and torch-free: import submodules explicitly
(`oat_ros.model`, `oat_ros.engine`, `oat_ros.chunks`, `oat_ros.ros`, ...).
"""

__version__ = "0.1.0"
