"""Where the package's data lives, in a source checkout, a pip install or a colcon install."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
DEFAULT_POLICY_DIR = ASSETS_DIR / "default_policy"


def share_dir() -> Path:
    """The package's share directory (config/, launch/): ament index first, then the source tree."""
    if os.environ.get("AMENT_PREFIX_PATH"):
        try:
            from ament_index_python.packages import get_package_share_directory
            share = Path(get_package_share_directory("oat_ros"))
            if (share / "config").is_dir():
                return share
        except Exception:  # not installed through ament (editable pip install): use the checkout
            pass
    return PACKAGE_DIR.parent


def default_params_file() -> Path:
    return share_dir() / "config" / "oat_ros.yaml"
