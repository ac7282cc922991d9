"""ROS 2 glue: nodes, parameter handling and message conversion (imports rclpy)."""
