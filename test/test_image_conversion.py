"""Image conversion: every encoding of the same picture gives the same array."""
import numpy as np
import pytest

from oat_ros.errors import InputError
from oat_ros.ros.image_conversion import ENCODINGS, compressed_to_rgb, fit_to, image_to_rgb, rgb_to_image_fields

cv2 = pytest.importorskip("cv2")
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

TOPIC = "/camera/test/image_raw"


def picture(h=6, w=7, gray=False, seed=0):
    rng = np.random.default_rng(seed)
    if gray:
        return np.repeat(rng.integers(0, 256, (h, w, 1), dtype=np.uint8), 3, axis=2)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def raw_image(rgb, encoding, pad=0):
    """A sensor_msgs/Image of rgb in `encoding`, each row padded with `pad` junk bytes."""
    h, w = rgb.shape[:2]
    px = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1],
          "rgba8": np.concatenate([rgb, np.full((h, w, 1), 7, np.uint8)], 2),
          "bgra8": np.concatenate([rgb[:, :, ::-1], np.full((h, w, 1), 9, np.uint8)], 2),
          "mono8": rgb[:, :, :1]}[encoding]
    rows = px.reshape(h, -1)
    junk = np.full((h, pad), 0xAB, np.uint8)
    data = np.ascontiguousarray(np.concatenate([rows, junk], 1))
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=rows.shape[1] + pad)
    msg.data = data.tobytes()
    return msg


def compressed(rgb, fmt=".png"):
    ok, buf = cv2.imencode(fmt, np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    msg = CompressedImage(format=fmt[1:])
    msg.data = buf.tobytes()
    return msg


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_give_the_picture(encoding, pad):
    rgb = picture()
    out = image_to_rgb(raw_image(rgb, encoding, pad), TOPIC)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pad", [0, 3])
def test_mono8_of_a_gray_picture(pad):
    gray = picture(gray=True)
    np.testing.assert_array_equal(image_to_rgb(raw_image(gray, "mono8", pad), TOPIC), gray)


def test_every_encoding_gives_the_same_tensor_after_resize():
    """What the node does: convert, then fit to the checkpoint's size (here 128 -> 64)."""
    gray = picture(128, 128, gray=True, seed=3)
    outs = [fit_to(image_to_rgb(raw_image(gray, enc, pad), TOPIC), (64, 64))
            for enc in ENCODINGS for pad in (0, 4)]
    outs.append(fit_to(compressed_to_rgb(compressed(gray), TOPIC), (64, 64)))
    for o in outs:
        assert o.shape == (64, 64, 3) and o.flags.c_contiguous
        np.testing.assert_array_equal(o, outs[0])


def test_compressed_png_is_lossless_and_jpeg_close():
    rgb = picture(16, 12)
    np.testing.assert_array_equal(compressed_to_rgb(compressed(rgb, ".png"), TOPIC), rgb)
    smooth = np.repeat(np.repeat(picture(4, 3, seed=1), 4, 0), 4, 1)
    jpg = compressed_to_rgb(compressed(smooth, ".jpg"), TOPIC)
    assert jpg.shape == smooth.shape
    assert np.abs(jpg.astype(int) - smooth).mean() < 20       # lossy, but the right channel order
    assert np.abs(jpg.astype(int) - smooth[:, :, ::-1]).mean() > np.abs(jpg.astype(int) - smooth).mean()


def test_unsupported_encoding_names_topic_and_encoding():
    msg = raw_image(picture(), "rgb8")
    msg.encoding = "16UC1"
    with pytest.raises(InputError) as e:
        image_to_rgb(msg, TOPIC)
    assert TOPIC in str(e.value) and "16UC1" in str(e.value) and "rgb8" in str(e.value)


def test_malformed_images_are_rejected_with_the_topic():
    msg = raw_image(picture(), "rgb8")
    msg.step = 5                                               # < width * 3
    with pytest.raises(InputError, match=TOPIC):
        image_to_rgb(msg, TOPIC)
    msg = raw_image(picture(), "rgb8")
    msg.data = bytes(msg.data)[:-1]                            # truncated
    with pytest.raises(InputError, match="bytes of data"):
        image_to_rgb(msg, TOPIC)
    msg = raw_image(picture(), "rgb8")
    msg.height = 0
    with pytest.raises(InputError, match="empty"):
        image_to_rgb(msg, TOPIC)
    bad = CompressedImage(format="png")
    bad.data = b"not a png"
    with pytest.raises(InputError, match=TOPIC):
        compressed_to_rgb(bad, TOPIC)
    with pytest.raises(InputError, match=TOPIC):
        compressed_to_rgb(CompressedImage(format="jpeg"), TOPIC)


def test_fit_to_resizes_and_flips():
    rgb = picture(8, 8)
    np.testing.assert_array_equal(fit_to(rgb, (8, 8), flip_vertical=True), rgb[::-1])
    small = fit_to(rgb, (4, 4))
    assert small.shape == (4, 4, 3)
    np.testing.assert_array_equal(small[0, 0], rgb[:2, :2].reshape(-1, 3).mean(0).round().astype(np.uint8))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_rgb_to_image_fields_round_trip(encoding):
    rgb = picture(gray=encoding == "mono8")
    msg = Image(**rgb_to_image_fields(rgb, encoding))
    np.testing.assert_array_equal(image_to_rgb(msg, TOPIC), rgb)
