"""Contact sheets: one row per prompt with its text, scores, reasoning and images.

Shared by `milr demo` (``contact_sheet.png``) and `milr bench` (``contact/GROUP.png``). Text is
drawn with DejaVu Sans, the TrueType font matplotlib ships (a core dependency), wrapped to the
pixel width of its column, so words never run together as with PIL's bitmap default font.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image
    from PIL.ImageFont import FreeTypeFont

RGB = tuple[int, int, int]
#: A text-column line: (style, text) or (style, text, colour overriding the style's).
Line = tuple[str, str] | tuple[str, str, RGB]
BLACK: RGB = (20, 20, 20)
GREY: RGB = (100, 100, 100)
PASS: RGB = (20, 130, 40)
FAIL: RGB = (190, 30, 30)
NEUTRAL: RGB = (60, 60, 60)

#: Line styles: (font size, bold, colour).
STYLES: dict[str, tuple[int, bool, RGB]] = {
    "title": (15, True, BLACK),
    "summary": (13, False, BLACK),
    "label": (11, True, GREY),
    "body": (12, False, NEUTRAL),
    "caption": (12, False, NEUTRAL),
    "header": (13, True, GREY),
    "sheet_title": (16, True, BLACK),
}


@functools.lru_cache(maxsize=16)
def font(size: int, bold: bool = False) -> FreeTypeFont:
    """DejaVu Sans (bold: DejaVu Sans Bold) at ``size`` pixels, from matplotlib's font folder."""
    import matplotlib
    from PIL import ImageFont

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path(), "fonts", "ttf", name)), size)


def wrap(text: str, fnt: FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; a word longer than the width is cut by characters."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        cur = ""
        for word in paragraph.split():
            trial = f"{cur} {word}" if cur else word
            if fnt.getlength(trial) <= width:
                cur = trial
                continue
            if cur:
                lines.append(cur)
            while fnt.getlength(word) > width:  # a very long token: break it
                cut = max(
                    1, next(i for i in range(len(word), 0, -1) if fnt.getlength(word[:i]) <= width)
                )
                lines.append(word[:cut])
                word = word[cut:]
            cur = word
        lines.append(cur)
    return lines


def verdict_colour(passed: bool | None) -> RGB:
    """Green for pass, red for fail, grey when the critic gives no verdict."""
    return {True: PASS, False: FAIL, None: NEUTRAL}[passed]


def verdict_word(passed: bool | None) -> str:
    return {True: "pass", False: "fail", None: "-"}[passed]


def fmt_score(score: float | None) -> str:
    return "-" if score is None else f"{score:.2f}"


@dataclass
class Cell:
    """An image with a caption under it (``image=None`` draws an empty grey cell)."""

    image: Any
    caption: str
    colour: RGB = NEUTRAL


@dataclass
class Row:
    """One row: a bold title, then (style, text) lines in the text column, then image cells.

    A line's ``colour`` overrides its style's colour when given.
    """

    title: str
    lines: list[Line] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)


def reasoning_lines(initial: str | None, final: str | None, final_step: int) -> list[Line]:
    """The reasoning text before and after MILR (or once, marked unchanged); empty if none."""
    if initial is None and final is None:
        return []
    if initial == final or final is None:
        plural = "s" if final_step != 1 else ""
        when = f"unchanged over {final_step} step{plural}" if final_step else "step 0"
        return [("label", f"reasoning ({when}):"), ("body", initial or "")]
    return [
        ("label", "reasoning, step 0:"),
        ("body", initial or ""),
        ("label", f"reasoning, step {final_step} (after MILR):"),
        ("body", final),
    ]


#: The key to the shapes model's grid codes, shown on sheets whose reasoning uses them.
GRID_KEY = (
    "key: rRcC = cell at row R, column C of the 4×4 grid (1-based; r1c1 top left, r4c4 "
    "bottom right)"
)


def run_title(critic: str, mode: str, seed: Any, oracle: bool | None) -> str:
    """The sheet's title line: reward critic, mode, seed, and whether it is an oracle run
    (the evaluation critic is the reward critic, resolved configurations equal)."""
    label = {True: "oracle run (evaluated by its reward critic)", False: "independent evaluation"}
    return (
        f"reward critic {critic} · mode {mode} · seed {seed} · "
        + label.get(oracle, "evaluation critic unknown")  # type: ignore[arg-type]
    )


def grid_key(texts: Sequence[str | None]) -> str | None:
    """`GRID_KEY` when any of `texts` holds a shapes grid code (``r1c3``), else None."""
    import re

    code = re.compile(r"\br[1-4]c[1-4]\b")
    return GRID_KEY if any(t and code.search(t) for t in texts) else None


#: How a sheet marks a fix with no optimised change (resample fix).
RESAMPLE_FIX = "resample fix: the passing image carries no change made by the latent update"


def render(
    rows: Sequence[Row],
    column_titles: Sequence[str],
    *,
    title: str | None = None,
    notes: Sequence[str] = (),
    cell: int = 192,
    text_width: int = 380,
    pad: int = 10,
) -> Image:
    """Draw the sheet: an optional title and note lines under it (e.g. `run_title`,
    `GRID_KEY`), column headers, then every row; returns the image."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    n_cells = max([len(r.cells) for r in rows] + [len(column_titles) - 1, 1])
    width = pad + text_width + n_cells * (cell + pad) + pad
    inner = text_width - pad

    def text_block(row: Row) -> list[tuple[str, FreeTypeFont, RGB, int]]:
        out = []
        size, bold, colour = STYLES["title"]
        f = font(size, bold)
        out += [(ln, f, colour, 0) for ln in wrap(row.title, f, inner)]
        for item in row.lines:
            style, text = item[0], item[1]
            size, bold, colour = STYLES[style]
            colour = item[2] if len(item) > 2 else colour  # type: ignore[misc]
            f = font(size, bold)
            gap = 6 if style == "label" else 0
            for i, ln in enumerate(wrap(text, f, inner)):
                out.append((ln, f, colour, gap if i == 0 else 0))
        return out

    cap_size = STYLES["caption"][0]
    blocks = [text_block(r) for r in rows]
    heights = [
        max(sum(gap + int(f.size) + 4 for _, f, _, gap in block), cell + cap_size + 10) + pad
        for block in blocks
    ]
    head = pad
    if title:
        head += STYLES["sheet_title"][0] + 10
    note_font = font(STYLES["summary"][0])
    note_lines = [ln for note in notes for ln in wrap(note, note_font, width - 2 * pad)]
    head += len(note_lines) * (int(note_font.size) + 4) + (6 if note_lines else 0)
    head += STYLES["header"][0] + 8
    sheet = PILImage.new("RGB", (width, head + sum(heights) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    y = pad
    if title:
        size, bold, colour = STYLES["sheet_title"]
        draw.text((pad, y), title, fill=colour, font=font(size, bold))
        y += size + 10
    for ln in note_lines:
        draw.text((pad, y), ln, fill=STYLES["summary"][2], font=note_font)
        y += int(note_font.size) + 4
    if note_lines:
        y += 6
    size, bold, colour = STYLES["header"]
    xs = [pad] + [pad + text_width + k * (cell + pad) for k in range(n_cells)]
    for x, name in zip(xs, column_titles):
        draw.text((x, y), name, fill=colour, font=font(size, bold))
    y = head
    caption_font = font(cap_size)
    for row, block, h in zip(rows, blocks, heights):
        draw.line([(pad, y - pad // 2), (width - pad, y - pad // 2)], fill=(225, 225, 225))
        ty = y
        for ln, f, colour, gap in block:
            ty += gap
            draw.text((pad, ty), ln, fill=colour, font=f)
            ty += int(f.size) + 4
        for k, c in enumerate(row.cells):
            x = xs[k + 1]
            if c.image is None:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(235, 235, 235))
            else:
                img = c.image.convert("RGB")
                small = img.width <= cell and img.height <= cell
                resample = PILImage.Resampling.NEAREST if small else PILImage.Resampling.LANCZOS
                sheet.paste(img.resize((cell, cell), resample), (x, y))
            draw.rectangle([x - 1, y - 1, x + cell, y + cell], outline=(200, 200, 200))
            draw.text((x, y + cell + 4), c.caption, fill=c.colour, font=caption_font)
        y += h
    return sheet
