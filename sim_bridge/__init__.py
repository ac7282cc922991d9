"""LIBERO simulation bridge for oat_ros.

* `sim_bridge.libero_env` — ROS-free wrapper of one LIBERO env (the only LIBERO importer).
* `sim_bridge.episodes` — episode plans from parameters (ROS-free).
* `sim_bridge.bridge_node` — the rclpy node (`main()`): publishes camera images, joint states,
  eef pose, /clock, episode events and chunk requests; executes `/oat/action_chunk` in lockstep
  or real time through `oat_ros.chunks`.

Importing this package imports neither LIBERO nor rclpy.
"""
