"""`milr.images.to_rgb`: every PIL mode a user's file can carry -> the right 8-bit RGB, or one line."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from milr import MilrUserError
from milr.critics._images import to_rgb as critics_to_rgb
from milr.images import to_rgb


def _reopen(image: Image.Image, fmt: str, **save) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def _grey16(value: int) -> Image.Image:
    return _reopen(Image.fromarray(np.full((4, 4), value, dtype=np.uint16)), "PNG")


def _palette(transparent: bool) -> Image.Image:
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0, 0, 0] * 254)
    return _reopen(im, "PNG", **({"transparency": 1} if transparent else {}))


CASES = [
    # (case, image factory, expected RGB of pixel (0, 0))
    ("RGB", lambda: Image.new("RGB", (4, 4), (10, 20, 30)), (10, 20, 30)),
    ("1 on", lambda: Image.new("1", (4, 4), 1), (255, 255, 255)),
    ("1 off", lambda: Image.new("1", (4, 4), 0), (0, 0, 0)),
    ("L", lambda: Image.new("L", (4, 4), 77), (77, 77, 77)),
    ("LA opaque", lambda: Image.new("LA", (4, 4), (100, 255)), (100, 100, 100)),
    ("LA clear", lambda: Image.new("LA", (4, 4), (100, 0)), (255, 255, 255)),
    ("P", lambda: _palette(False), (10, 200, 30)),
    ("P transparency", lambda: _palette(True), (255, 255, 255)),
    ("I;16 mid-grey PNG", lambda: _grey16(32768), (128, 128, 128)),
    ("I;16 white PNG", lambda: _grey16(65535), (255, 255, 255)),
    ("I;16 dark PNG", lambda: _grey16(257 * 10), (10, 10, 10)),
    (
        "I;16B",
        lambda: Image.frombytes("I;16B", (2, 2), np.full(4, 32768, ">u2").tobytes()),
        (128, 128, 128),
    ),
    ("I", lambda: Image.new("I", (4, 4), 32768), (128, 128, 128)),
    ("F", lambda: Image.new("F", (4, 4), 0.5), (128, 128, 128)),
    ("F TIFF", lambda: _reopen(Image.new("F", (4, 4), 0.25), "TIFF"), (64, 64, 64)),
    ("CMYK white", lambda: Image.new("CMYK", (4, 4), (0, 0, 0, 0)), (255, 255, 255)),
    ("CMYK cyan", lambda: Image.new("CMYK", (4, 4), (255, 0, 0, 0)), (0, 255, 255)),
    ("RGBA half", lambda: Image.new("RGBA", (4, 4), (200, 0, 0, 128)), (228, 127, 127)),
    (
        "RGBA WebP",
        lambda: _reopen(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "WEBP", lossless=True),
        (255, 255, 255),
    ),
]


@pytest.mark.parametrize("case, make, expected", CASES, ids=[c[0] for c in CASES])
def test_mode_table(case, make, expected):
    image = make()
    out = to_rgb(image, "test")
    assert out.mode == "RGB" and out.size == image.size
    assert out.getpixel((0, 0)) == pytest.approx(expected, abs=1), case


def test_exif_rotated_jpeg_comes_out_upright():
    im = Image.new("RGB", (40, 20), (0, 0, 230))
    im.paste((230, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    jpeg = _reopen(im, "JPEG", exif=exif.tobytes(), quality=95)
    out = to_rgb(jpeg, "test")
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 40, top  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 40, bottom
    assert jpeg.size == (40, 20)  # the input is left alone


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_image_reads_first_frame(fmt):
    frames = [Image.new("RGB", (8, 8), c) for c in ((230, 0, 0), (0, 0, 230))]
    buf = io.BytesIO()
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=100, **kwargs)
    buf.seek(0)
    anim = Image.open(buf)
    assert getattr(anim, "n_frames", 1) == 2
    anim.seek(1)  # left on the last frame by whoever opened it
    r, g, b = to_rgb(anim, "test").getpixel((4, 4))
    assert r > 200 and b < 40


@pytest.mark.parametrize(
    "make, mode",
    [
        (lambda: Image.new("I", (4, 4), 70000), "'I'"),
        (lambda: Image.new("I", (4, 4), -3), "'I'"),
        (lambda: Image.new("F", (4, 4), 2.0), "'F'"),
        (lambda: Image.new("F", (4, 4), float("nan")), "'F'"),
        (lambda: Image.new("LAB", (4, 4)), "'LAB'"),
        (lambda: Image.new("HSV", (4, 4)), "'HSV'"),
    ],
)
def test_unreadable_modes_are_one_line_naming_file_and_mode(make, mode):
    with pytest.raises(MilrUserError) as info:
        to_rgb(make(), "clip", name="/data/scan-007.tif")
    text = str(info.value)
    assert "\n" not in text and text.startswith("/data/scan-007.tif: ") and mode in text


def test_file_name_comes_from_the_opened_file(tmp_path):
    path = tmp_path / "depth.tif"
    Image.new("F", (4, 4), 3.5).save(path)
    with Image.open(path) as im, pytest.raises(MilrUserError, match=f"^{path}: .*'F'.*3.5"):
        to_rgb(im, "clip")


def test_critics_use_the_same_function():
    assert critics_to_rgb is to_rgb


def test_milr_score_gives_16_bit_grey_the_8_bit_score(tmp_path):
    # issue #11 case 5: main scored mid-grey 1.000 as 8-bit and 0.000 as 16-bit (clipped to white)
    from cli_helpers import run_milr

    eight, sixteen = tmp_path / "grey8.png", tmp_path / "grey16.png"
    Image.new("L", (16, 16), 128).save(eight)
    Image.fromarray(np.full((16, 16), 32896, dtype=np.uint16)).save(sixteen)  # 128 * 257
    assert Image.open(sixteen).mode == "I;16"
    proc = run_milr(
        "score",
        str(eight),
        str(sixteen),
        "--prompt",
        "grey",
        "--critic",
        "color:target=gray",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    scores = [r["score"] for r in json.loads(proc.stdout)["results"]]
    assert scores == [1.0, 1.0]
    bad = tmp_path / "lab.tif"
    Image.new("F", (4, 4), 9.0).save(bad)
    proc = run_milr("score", str(bad), "--prompt", "grey", "--critic", "color:target=gray")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert str(bad) in proc.stderr and "'F'" in proc.stderr


def test_open_rgb_reads_files_and_refuses_in_one_line(tmp_path):
    from milr.images import open_rgb

    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(path)
    rgb = open_rgb(path, "milr bench rescore")
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (128, 128, 128)
    (tmp_path / "notes.png").write_text("not an image")
    for bad, fragment in (
        (tmp_path / "missing.png", "does not exist"),
        (tmp_path / "notes.png", "cannot read"),
    ):
        with pytest.raises(MilrUserError) as info:
            open_rgb(bad)
        assert fragment in str(info.value) and str(bad) in str(info.value)
        assert "\n" not in str(info.value)


def test_image_files_are_opened_in_one_place():
    """Every image file milr reads goes through `open_rgb` (rescore and the report each had a
    reader of their own that clipped 16-bit greys)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    opens = [
        f"{path.relative_to(root)}:{n}"
        for base in ("milr", "critics")
        for path in sorted((root / base).rglob("*.py"))
        if path.relative_to(root).as_posix() != "milr/images.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bImage\.open\(", line)
    ]
    assert opens == [], f"read image files with milr.images.open_rgb: {opens}"


def test_open_rgb_stays_one_line_when_ultralytics_patched_pil(tmp_path):
    """ultralytics replaces `PIL.Image.open` (retrying unknown files through a HEIF plugin it
    may try to install); a non-image still gives milr's one line, never an ImportError."""
    pytest.importorskip("ultralytics")
    import ultralytics  # noqa: F401  (importing it patches PIL.Image.open)
    from PIL import Image as PILImage

    from milr.images import open_rgb

    assert PILImage.open.__module__ != "PIL.Image"  # the patch is in place
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(MilrUserError) as info:
        open_rgb(bad)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"cannot read {str(bad)!r} as an image")
