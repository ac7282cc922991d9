"""Decoding engine: observation in, action chunk out, within a deadline.

ROS-free. `settings`, `deadline` and `anytime` need no torch; `engine` and `backend` do.
"""
from oat_ros.engine.settings import DecodeSettings

__all__ = ["DecodeSettings"]
