"""Decoding: every Pillow mode ends up as (S, S, 3) uint8 RGB with the documented rules."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from entromix.data.images import decode_image, sha256_file


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_rgb_round_trip_exact_at_same_size(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = _save(Image.fromarray(pixels), tmp_path / "a.png")
    out = decode_image(path, 16)
    assert out.pixels.dtype == np.uint8 and out.pixels.shape == (16, 16, 3)
    np.testing.assert_array_equal(out.pixels, pixels)
    assert (out.width, out.height, out.mode) == (16, 16, "RGB")


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "YCbCr"])
def test_other_modes_become_rgb(tmp_path, mode):
    img = Image.new("RGB", (20, 10), (200, 200, 200)).convert(mode)
    path = _save(img, tmp_path / ("a.tif" if mode in ("CMYK", "YCbCr") else "a.png"))
    out = decode_image(path, 8)
    assert out.pixels.shape == (8, 8, 3)
    assert out.mode == Image.open(path).mode


def test_grayscale_keeps_value_in_all_channels(tmp_path):
    path = _save(Image.new("L", (8, 8), 77), tmp_path / "g.png")
    np.testing.assert_array_equal(decode_image(path, 8).pixels, np.full((8, 8, 3), 77, np.uint8))


def test_rgba_transparent_becomes_white_and_opaque_keeps_colour(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[:, :4] = (10, 20, 30, 255)  # opaque left half
    arr[:, 4:] = (10, 20, 30, 0)  # transparent right half
    path = _save(Image.fromarray(arr, "RGBA"), tmp_path / "a.png")
    px = decode_image(path, 8).pixels
    np.testing.assert_array_equal(px[:, :4], np.broadcast_to([10, 20, 30], (8, 4, 3)))
    np.testing.assert_array_equal(px[:, 4:], np.full((8, 4, 3), 255))


def test_la_half_transparent_is_blended_over_white(tmp_path):
    arr = np.zeros((4, 4, 2), np.uint8)
    arr[..., 0], arr[..., 1] = 0, 128
    path = _save(Image.fromarray(arr, "LA"), tmp_path / "la.png")
    assert abs(int(decode_image(path, 4).pixels[0, 0, 0]) - 127) <= 1


def test_palette_with_and_without_transparency(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    plain = _save(img, tmp_path / "p.png")
    np.testing.assert_array_equal(decode_image(plain, 8).pixels[0, 0], [255, 0, 0])
    transparent = _save(img, tmp_path / "pt.png", transparency=0)
    np.testing.assert_array_equal(decode_image(transparent, 8).pixels[0, 0], [255, 255, 255])


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257 * 100], [65535, 32768]], dtype=np.uint16)
    path = _save(Image.fromarray(arr), tmp_path / "d.png")
    out = decode_image(path, 2, "stretch")
    assert out.mode.startswith("I")
    np.testing.assert_array_equal(out.pixels[..., 0], [[0, 100], [255, 128]])


def test_float_image_in_unit_range_is_scaled(tmp_path):
    arr = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    path = _save(Image.fromarray(arr, "F"), tmp_path / "f.tif")
    np.testing.assert_array_equal(decode_image(path, 2).pixels[..., 1], [[0, 128], [255, 64]])


def test_resize_modes_on_a_wide_image(tmp_path):
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, 10:20] = 200  # a grey centre third on black
    path = _save(Image.fromarray(arr), tmp_path / "w.png")
    crop = decode_image(path, 10, "center_crop").pixels
    assert crop.mean() == pytest.approx(200, abs=1)  # only the centre square survives
    pad = decode_image(path, 30, "pad").pixels
    np.testing.assert_array_equal(pad[0], np.full((30, 3), 255))  # white letterbox rows
    stretch = decode_image(path, 12, "stretch").pixels
    assert stretch[:, 0].mean() < 20 and stretch[:, 6].mean() > 150


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, :32] = (255, 0, 0)  # red left, blue right
    arr[:, 32:] = (0, 0, 255)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = tmp_path / "o.jpg"
    img.save(path, exif=exif, quality=95)
    out = decode_image(path, 16, "pad")
    assert (out.width, out.height) == (64, 32)  # the file's own size
    top, bottom = out.pixels[:8].reshape(-1, 3).mean(0), out.pixels[8:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and bottom[2] > 200  # red ends up on top once rotated upright


def test_jpeg_draft_decode_matches_full_decode(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    big = Image.fromarray(base).resize((256, 256), Image.Resampling.BICUBIC)
    path = tmp_path / "big.jpg"
    big.save(path, quality=95)
    fast = decode_image(path, 32).pixels.astype(int)
    full = np.asarray(
        Image.open(path).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=3.0)
    ).astype(int)
    assert np.abs(fast - full).mean() < 4


def test_sha256_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"entromix" * 1000)
    assert sha256_file(path, chunk=7) == hashlib.sha256(b"entromix" * 1000).hexdigest()


# ingest.intensity: how 16-bit grayscale becomes 8 bits
TWELVE_BIT = np.array([[0, 4095], [2048, 16 * 100]], dtype=np.uint16)  # a 12-bit camera's range


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_fixed16_squeezes_12_bit_data_into_the_bottom_of_the_range(tmp_path, fmt):
    path = _save(Image.fromarray(TWELVE_BIT), tmp_path / f"d.{fmt}")
    out = decode_image(path, 2, "stretch", "fixed16")
    assert out.pixels.max() == 16 and out.peak == 4095  # the problem the option exists for


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_fixed12_maps_0_4095_to_0_255(tmp_path, fmt):
    path = _save(Image.fromarray(TWELVE_BIT), tmp_path / f"d.{fmt}")
    out = decode_image(path, 2, "stretch", "fixed12")
    np.testing.assert_array_equal(out.pixels[..., 0], [[0, 255], [128, 100]])  # round(v * 255 / 4095)
    assert (out.pixels[..., 0] == out.pixels[..., 2]).all()


def test_fixed12_clips_values_above_4095(tmp_path):
    arr = np.array([[0, 4095], [8000, 65535]], dtype=np.uint16)
    out = decode_image(_save(Image.fromarray(arr), tmp_path / "d.png"), 2, "stretch", "fixed12")
    np.testing.assert_array_equal(out.pixels[..., 0], [[0, 255], [255, 255]])


def test_per_image_minmax_stretches_each_image_to_its_own_range(tmp_path):
    arr = np.array([[1000, 1100], [1200, 1050]], dtype=np.uint16)
    out = decode_image(_save(Image.fromarray(arr), tmp_path / "d.png"), 2, "stretch", "per_image_minmax")
    np.testing.assert_array_equal(out.pixels[..., 0], [[0, 128], [255, 64]])
    flat = np.full((2, 2), 3000, dtype=np.uint16)
    out = decode_image(_save(Image.fromarray(flat), tmp_path / "f.png"), 2, "stretch", "per_image_minmax")
    assert (out.pixels == 0).all()


def test_intensity_leaves_8_bit_images_alone(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path = _save(Image.fromarray(pixels), tmp_path / "rgb.png")
    gray = _save(Image.fromarray(pixels[..., 0]), tmp_path / "l.png")
    for intensity in ("fixed16", "fixed12", "per_image_minmax"):
        np.testing.assert_array_equal(decode_image(path, 8, "stretch", intensity).pixels, pixels)
        np.testing.assert_array_equal(decode_image(gray, 8, "stretch", intensity).pixels[..., 1], pixels[..., 0])
        assert decode_image(path, 8, "stretch", intensity).peak is None


@pytest.mark.parametrize("intensity", ["fixed16", "fixed12", "per_image_minmax"])
def test_predict_decodes_16_bit_files_as_the_checkpoint_says_ingest_did(tmp_path, intensity):
    from entromix.prediction.predict import read_images

    path = _save(Image.fromarray(TWELVE_BIT), tmp_path / "d.png")
    preprocess = {"stored_size": 2, "resize_mode": "stretch", "intensity": intensity, "min_image_size": 1}
    pixels, kept, skipped = read_images([path], preprocess, "error", progress=False)
    np.testing.assert_array_equal(pixels[0], decode_image(path, 2, "stretch", intensity).pixels)
    assert kept == [path] and not skipped
