"""sensor_msgs/Image and CompressedImage -> RGB uint8 numpy arrays (no cv_bridge here).

Supported raw encodings: rgb8, bgr8, rgba8, bgra8, mono8 (row `step` padding is honoured).
Compressed: jpeg/png through OpenCV. Everything else is rejected with the encoding named.
"""
from __future__ import annotations

import numpy as np

from oat_ros.errors import InputError

_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
ENCODINGS = tuple(_CHANNELS)


def image_to_rgb(msg, topic: str = "?") -> np.ndarray:
    """A raw sensor_msgs/Image -> [H, W, 3] uint8 RGB (a view where possible)."""
    enc = msg.encoding.lower()
    if enc not in _CHANNELS:
        raise InputError(f"{topic}: unsupported image encoding '{msg.encoding}' (supported: {', '.join(ENCODINGS)})")
    c, h, w, step = _CHANNELS[enc], msg.height, msg.width, msg.step
    if h == 0 or w == 0:
        raise InputError(f"{topic}: empty image ({w}x{h})")
    if step < w * c:
        raise InputError(f"{topic}: step {step} < width {w} x {c} bytes per pixel")
    if len(msg.data) < step * h:
        raise InputError(f"{topic}: {len(msg.data)} bytes of data, expected step {step} x height {h} = {step * h}")
    if msg.is_bigendian and c > 1:
        pass  # 8-bit channels: byte order does not apply
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=step * h).reshape(h, step)
    px = rows[:, : w * c].reshape(h, w, c)
    if enc == "rgb8":
        return px
    if enc == "bgr8":
        return px[:, :, ::-1]
    if enc == "rgba8":
        return px[:, :, :3]
    if enc == "bgra8":
        return px[:, :, 2::-1]
    return np.repeat(px, 3, axis=2)  # mono8


def compressed_to_rgb(msg, topic: str = "?") -> np.ndarray:
    """A sensor_msgs/CompressedImage (jpeg/png) -> [H, W, 3] uint8 RGB."""
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - opencv is a declared dependency
        raise InputError(f"{topic}: CompressedImage needs OpenCV (pip install opencv-python-headless)") from e
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise InputError(f"{topic}: could not decode CompressedImage (format '{msg.format}', {buf.size} bytes)")
    return img[:, :, ::-1]


def fit_to(img: np.ndarray, shape_hw: tuple[int, int], flip_vertical: bool = False) -> np.ndarray:
    """Resize to the checkpoint's camera size (area interpolation) and optionally flip."""
    h, w = shape_hw
    if img.shape[:2] != (h, w):
        import cv2
        img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_AREA)
    if flip_vertical:
        img = img[::-1]
    return np.ascontiguousarray(img)


def rgb_to_image_fields(img: np.ndarray, encoding: str = "rgb8") -> dict:
    """Fields of a sensor_msgs/Image holding `img` ([H,W,3] RGB uint8) in `encoding`."""
    h, w = img.shape[:2]
    if encoding == "rgb8":
        px = img
    elif encoding == "bgr8":
        px = img[:, :, ::-1]
    elif encoding == "rgba8":
        px = np.concatenate([img, np.full((h, w, 1), 255, np.uint8)], axis=2)
    elif encoding == "bgra8":
        px = np.concatenate([img[:, :, ::-1], np.full((h, w, 1), 255, np.uint8)], axis=2)
    elif encoding == "mono8":
        px = img[:, :, :1]
    else:
        raise InputError(f"unsupported encoding '{encoding}'")
    px = np.ascontiguousarray(px)
    return {"height": h, "width": w, "encoding": encoding, "is_bigendian": 0,
            "step": w * px.shape[2], "data": px.tobytes()}
