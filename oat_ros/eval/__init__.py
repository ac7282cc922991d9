"""Evaluation from bags: reading/repair (bags), metrics, reports, and the oat-ros-eval CLI."""
