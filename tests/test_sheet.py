"""Contact-sheet drawing (milr.sheet): TrueType text wrapped to its column, rows sized to fit."""

from __future__ import annotations

import pytest
from PIL import Image, ImageFont

from milr.sheet import PASS, Cell, Row, font, reasoning_lines, render, wrap


def test_font_is_matplotlibs_dejavu_truetype():
    f = font(13)
    assert isinstance(f, ImageFont.FreeTypeFont)
    assert f.getname()[0] == "DejaVu Sans"
    assert font(13, bold=True).getname() == ("DejaVu Sans", "Bold")


@pytest.mark.parametrize("width", [60, 120, 300])
def test_wrap_keeps_every_word_and_the_width(width):
    text = "orange triangle at r1c1. green triangle at r1c4. yellow triangle at r4c1."
    f = font(12)
    lines = wrap(text, f, width)
    assert " ".join(lines).split() == text.split()
    assert all(f.getlength(ln) <= width for ln in lines)
    assert len(lines) > 1


def test_wrap_breaks_a_word_wider_than_the_column():
    f = font(12)
    lines = wrap("x" * 80, f, 50)
    assert "".join(lines) == "x" * 80 and all(f.getlength(ln) <= 50 for ln in lines)


def test_reasoning_lines_show_before_and_after_or_say_unchanged():
    same = reasoning_lines("red circle at r1c1.", "red circle at r1c1.", 20)
    assert same == [
        ("label", "reasoning (unchanged over 20 steps):"),
        ("body", "red circle at r1c1."),
    ]
    moved = reasoning_lines("orange triangle.", "purple triangle.", 3)
    assert [t for _, t in moved] == [
        "reasoning, step 0:", "orange triangle.", "reasoning, step 3 (after MILR):",
        "purple triangle.",
    ]  # fmt: skip
    assert reasoning_lines(None, None, 4) == []  # image-only runs have no reasoning


def test_render_places_images_captions_and_grows_rows_for_long_text():
    red = Image.new("RGB", (64, 64), (220, 30, 30))
    blue = Image.new("RGB", (64, 64), (30, 70, 220))
    short = Row(
        "a prompt",
        [("summary", "score 0.50 → 1.00")],
        [Cell(red, "step 0"), Cell(blue, "step 1", PASS)],
    )
    long = Row("a prompt", [("body", "word " * 400)], [Cell(red, "x"), Cell(None, "missing")])
    one = render([short], ["prompt", "first", "MILR"], cell=100, text_width=200, pad=10)
    two = render([short, long], ["prompt", "first", "MILR"], cell=100, text_width=200, pad=10)
    assert one.size[0] == 10 + 200 + 2 * 110 + 10
    assert two.size[1] - one.size[1] > 100 + 20  # the long row is taller than an image cell
    # the images sit in their columns, upscaled without blur
    y0 = one.size[1] - 10 - (100 + 12 + 10 + 10) + 50
    assert one.getpixel((10 + 200 + 50, y0)) == (220, 30, 30)
    assert one.getpixel((10 + 200 + 110 + 50, y0)) == (30, 70, 220)
    # the pass caption is drawn in the pass colour
    caption = one.crop((320, y0 + 52, 420, y0 + 70))
    assert PASS in {c for _, c in caption.getcolors(10000)}


def test_bench_contact_sheet_shows_scores_steps_reasoning_and_verdicts(tmp_path):
    """`milr bench`'s per-tag sheet, read back by tesseract: prompt, reward scores and steps,
    reasoning before and after, and each image's evaluation verdict."""
    import shutil

    from milr.bench.record import BenchRecord
    from milr.bench.report import contact_sheet

    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 64), (220, 30, 30)).save(tmp_path / "images" / "base.png")
    Image.new("RGB", (64, 64), (30, 70, 220)).save(tmp_path / "images" / "milr.png")
    rec = BenchRecord.from_dict(
        {
            "prompt_id": "00007", "seed_index": 0, "prompt": "a photo of three triangles",
            "group": "counting",
            "base": {"image": "images/base.png", "score": 0.58, "passed": False},
            "milr": {"image": "images/milr.png", "score": 1.0, "passed": True},
            "trajectory": {
                "steps": 3, "stop_reason": "threshold", "scores": [0.583, 0.583, 0.667, 1.0],
                "reasoning": {"initial": "orange triangle top left", "final": "purple triangle top left"},
            },
        }
    )  # fmt: skip
    failed = BenchRecord.from_dict(
        {"prompt_id": "00008", "prompt": "a photo of a circle", "error": "CUDA out of memory"}
    )
    sheet = contact_sheet(tmp_path, [rec, failed], "counting: accuracy base 0.00 -> MILR 1.00")
    assert sheet.size[0] == 10 + 360 + 2 * (160 + 10) + 10
    assert sheet.getpixel((10 + 360 + 80, 80 + 40)) == (220, 30, 30)  # the base image, unblurred
    pytesseract = pytest.importorskip("pytesseract")
    if shutil.which("tesseract") is None:
        pytest.skip("Debian's tesseract-ocr is not installed; the OCR check of the sheet needs it")
    text = " ".join(pytesseract.image_to_string(sheet.convert("RGB")).split())
    for expected in (
        "a photo of three triangles", "0.58", "1.00", "3 steps (threshold)",
        "orange triangle top left", "purple triangle top left", "base: FAIL 0.58",
        "MILR: PASS 1.00", "error: CUDA out of memory",
    ):  # fmt: skip
        assert expected in text, (expected, text)


def test_bench_sheet_title_line_grid_key_control_column_and_resample_fix(tmp_path):
    """A control run's sheet: the run's title line, the key to the grid codes, a third column
    with the control's image, and a MILR fix without optimised change marked as such."""
    import shutil

    from milr.bench.record import BenchRecord
    from milr.bench.report import contact_sheet
    from milr.sheet import GRID_KEY, RESAMPLE_FIX, grid_key, run_title

    (tmp_path / "images").mkdir()
    for name, colour in (("base", (220, 30, 30)), ("milr", (30, 70, 220)), ("ctl", (30, 160, 60))):
        Image.new("RGB", (64, 64), colour).save(tmp_path / "images" / f"{name}.png")
    rec = BenchRecord.from_dict(
        {
            "prompt_id": "3", "prompt": "a photo of a red circle", "group": "colors",
            "base": {"image": "images/base.png", "score": 0.5, "passed": False},
            "milr": {"image": "images/milr.png", "score": 1.0, "passed": True},
            "control": {"image": "images/ctl.png", "score": 1.0, "passed": True},
            "trajectory": {
                "steps": 2, "stop_reason": "threshold", "scores": [0.5, 0.5, 1.0],
                "selected_optimised": False,
                "reasoning": {"initial": "red circle at r1c3 .", "final": "red circle at r1c3 ."},
            },
        }
    )  # fmt: skip
    title = run_title("shapes", "both", 42, True)
    assert grid_key(["red circle at r1c3 ."]) == GRID_KEY and grid_key(["a red circle"]) is None
    sheet = contact_sheet(tmp_path, [rec], "colors: accuracy", [title])
    assert sheet.size[0] == 10 + 360 + 3 * (160 + 10) + 10  # base, MILR, control
    plain = contact_sheet(tmp_path, [rec], "colors: accuracy")
    assert sheet.size[1] > plain.size[1]  # the title line takes room
    pytesseract = pytest.importorskip("pytesseract")
    if shutil.which("tesseract") is None:
        pytest.skip("Debian's tesseract-ocr is not installed; the OCR check of the sheet needs it")
    text = " ".join(pytesseract.image_to_string(sheet.convert("RGB")).split())
    for expected in ("reward critic shapes", "seed 42", "oracle run", "r4c4 bottom right",
                     "control: PASS 1.00", RESAMPLE_FIX.split(":")[0]):  # fmt: skip
        assert expected in text, (expected, text)
