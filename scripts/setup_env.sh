#!/usr/bin/env bash
# One-time (idempotent) set-up of everything oat_ros needs on Debian 12 / Python 3.11:
#   system packages (only the missing ones), a venv in .venv with torch==2.13.0, LIBERO and the
#   ROS 2 Kilted wheels, the generated oat_ros_interfaces messages, and oat_ros itself (editable).
# Each step is skipped when a stamp in .venv/.stamps says its inputs have not changed.
# Usage: bash scripts/setup_env.sh        (then: source scripts/env.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${OAT_ROS_VENV:-$ROOT/.venv}
STAMPS=$VENV/.stamps
PY=$VENV/bin/python
log() { printf '[setup] %s\n' "$*"; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }
t0=$SECONDS

# 1. System packages: a compiler, cmake and Python headers for message generation; EGL/Mesa for
#    LIBERO's offscreen rendering. Installed only when missing (needs root or sudo).
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
PYBIN=${PYTHON:-python3.11}
command -v "$PYBIN" >/dev/null || PYBIN=python3
"$PYBIN" -c 'import sysconfig,os,sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")))' \
  || need+=(python3-dev)
"$PYBIN" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
for p in libegl1 libgl1-mesa-dri libgbm1; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# 2. The venv and its Python packages (one resolution, pinned torch).
if [ ! -x "$PY" ]; then
  log "creating venv $VENV"
  "$PYBIN" -m venv "$VENV"
fi
REQ_HASH=$(hash_of "$ROOT/requirements/venv.txt")
if ! stamp_ok pip "$REQ_HASH"; then
  log "pip install -r requirements/venv.txt (cold: about 2 minutes)"
  "$PY" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements/venv.txt" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  "$PY" -c 'import torch, rclpy, numpy; assert torch.__version__.startswith("2.13.0"), torch.__version__' \
    || { log "pip install failed"; exit 1; }
  stamp_set pip "$REQ_HASH"
  rm -f "$STAMPS/msgs"   # messages must be rebuilt against the (possibly new) numpy/ROS wheels
fi

# 3. Messages: rosidl + CMake from the wheels, installed into the venv prefix (see
#    shared design notes: the wheels' CMake files name the wheel builder's Python; fix them).
MSG_HASH=$(hash_of "$ROOT"/msg/*.msg "$ROOT/oat_ros_interfaces/CMakeLists.txt" "$ROOT/oat_ros_interfaces/package.xml")
if ! stamp_ok msgs "$MSG_HASH"; then
  log "building oat_ros_interfaces messages (about 30 s)"
  PYINC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  NPINC=$("$PY" -c 'import numpy; print(numpy.get_include())')
  { grep -rl '/opt/python/cp3' "$VENV/share" --include='*.cmake' || true; } | xargs -r sed -i \
    -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/lib/python3\.[0-9]*/site-packages/numpy/_core/include#$NPINC#g" \
    -e "s#/opt/python/cp3[0-9]*-cp3[0-9]*/include/python3\.[0-9]*#$PYINC#g"
  BUILD=$ROOT/build/oat_ros_interfaces
  rm -rf "$BUILD"; mkdir -p "$BUILD"
  export AMENT_PREFIX_PATH=$VENV
  cmake -S "$ROOT/oat_ros_interfaces" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$VENV" \
    -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF > "$BUILD/configure.log" 2>&1 \
    || { cat "$BUILD/configure.log"; exit 1; }
  cmake --build "$BUILD" -j "$(nproc)" > "$BUILD/build.log" 2>&1 || { tail -50 "$BUILD/build.log"; exit 1; }
  cmake --install "$BUILD" > /dev/null
  "$PY" -c 'from oat_ros_interfaces.msg import ActionChunk, Episode; from rclpy.serialization import serialize_message as s; s(ActionChunk()); s(Episode())' \
    || { log "generated messages do not import"; exit 1; }
  stamp_set msgs "$MSG_HASH"
fi

# 4. oat_ros itself, editable (console scripts in .venv/bin; config/launch in .venv/share/oat_ros).
# (the editable finder maps top-level packages found at install time: reinstall when one appears)
PKG_HASH=$( (cat "$ROOT/setup.py" "$ROOT/setup.cfg" "$ROOT/package.xml"; cd "$ROOT" && ls -d */__init__.py) | sha256sum | cut -c1-16)
if ! stamp_ok pkg "$PKG_HASH"; then
  log "pip install -e . (oat_ros)"
  "$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  stamp_set pkg "$PKG_HASH"
fi
log "environment ready in $((SECONDS - t0)) s: $VENV"
