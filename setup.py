"""oat_ros: an ament_python package that also installs with plain pip.

colcon (full ROS 2 install) and `pip install -e .` (PyPI ROS 2 wheels) both use this file.
Heavy Python dependencies (torch, LIBERO, the ROS wheels) are NOT install_requires: a real
ROS install provides rclpy under other distribution names, and torch must be pinned exactly
(see requirements/venv.txt and scripts/setup_env.sh).
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "oat_ros"
VERSION = "0.1.0"  # keep equal to package.xml (checked by test/test_package_metadata.py)

setup(
    name=PACKAGE,
    version=VERSION,
    description="Run OAT robot policies under ROS 2 with deadline-aware anytime decoding",
    license="Apache-2.0",
    packages=find_packages(include=["oat_ros", "oat_ros.*", "sim_bridge", "sim_bridge.*"]),
    package_data={"oat_ros": ["assets/*", "assets/**/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "pyyaml"],
    zip_safe=False,
    entry_points={
        "console_scripts": [
            # ROS executables (names used by launch/*.launch.py)
            "policy_node = oat_ros.ros.policy_node:main",
            "sim_bridge = sim_bridge.bridge_node:main",
            "recorder = oat_ros.ros.recorder_node:main",
            "chunk_executor = oat_ros.ros.executor_node:main",
            # command-line tools
            "oat-ros-bringup = oat_ros.ros.bringup:main",
            "oat-ros-export = oat_ros.checkpoint.cli:main",
            "oat-ros-eval = oat_ros.eval.cli:main",
            "oat-ros-eval-run = oat_ros.eval.runner:main",
            "oat-ros-record-demos = sim_bridge.record_demos:main",
            "oat-ros-train-tokenizer = oat_ros.train.tokenizer_train:main",
            "oat-ros-train-policy = oat_ros.train.policy_train:main",
            "oat-ros-train-tail = oat_ros.train.tail_train:main",
        ],
    },
)
