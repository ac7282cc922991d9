# Source this to use the oat_ros venv in a shell:  source scripts/env.sh
# Sets the variables every oat_ros process needs here (DDS stays on loopback).
_OAT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export VIRTUAL_ENV=${OAT_ROS_VENV:-$_OAT_ROOT/.venv}
export PATH=$VIRTUAL_ENV/bin:$PATH
# Network rule: DDS discovery on loopback only (ROS_LOCALHOST_ONLY is ignored by Kilted).
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export AMENT_PREFIX_PATH=$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
export MUJOCO_GL=${MUJOCO_GL:-egl}
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
unset _OAT_ROOT
