"""Tesseract for the ``ocr`` critic: one bounded process per image, lines with boxes back.

`read_lines` runs ``tesseract`` through ``pytesseract.run_and_get_output`` with a per-image
``timeout`` (pytesseract kills the process when it runs over). It deliberately avoids
``pytesseract.image_to_data``, whose first call runs ``tesseract --version`` with no time limit,
which a hung binary never answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from milr.critic import require
from milr.errors import MilrUserError

if TYPE_CHECKING:
    from PIL.Image import Image

#: One recognised line: text, box ``[x0, y0, x1, y1]`` in pixels, confidence in [0, 1].
Line = tuple[str, list[float], float]


class _TesseractTimeout(Exception):
    """One image's tesseract process ran past the timeout (internal; reported per image)."""


def _tsv_columns(tsv: str) -> dict[str, list[Any]]:
    """Tesseract's TSV output as columns: numbers as int/float, ``text`` as strings."""
    rows = [line.split("\t") for line in tsv.strip("\n").split("\n")]
    if len(rows) < 2:
        return {"text": []}
    header, body = rows[0], rows[1:]
    columns: dict[str, list[Any]] = {name: [] for name in header}
    for row in body:
        row = row + [""] * (len(header) - len(row))
        for name, cell in zip(header, row):
            if name == "text":
                columns[name].append(cell)
            else:
                try:
                    columns[name].append(int(cell))
                except ValueError:
                    try:
                        columns[name].append(float(cell))
                    except ValueError:
                        columns[name].append(cell)
    return columns


def read_lines(
    images: list[Image], *, cmd: str, lang: str, config: str, timeout: float, workers: int
) -> list[list[Line] | str]:
    """Per image, tesseract's lines (grouped by block/paragraph/line number), or the one-line
    reason (a `str`) when its process ran past `timeout` seconds: one stuck image loses nothing
    of the others (the caller raises `ExternalServiceError` for it, keeping the rest). A missing
    binary or a tesseract error is a `MilrUserError` saying what to check."""
    pytesseract = require("pytesseract", "ocr", "ocr")
    # pytesseract keeps the binary path in a module global: set it on every call.
    pytesseract.pytesseract.tesseract_cmd = cmd

    def one(im: Image) -> list[Line] | str:
        try:
            return _read_one(pytesseract, im, lang, config, timeout)
        except _TesseractTimeout as exc:
            return str(exc)

    if len(images) > 1 and workers > 1:
        # one tesseract process per image: run them side by side (the batch speed-up)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(workers, len(images))) as pool:
            outcome = list(pool.map(one, images))
    else:
        outcome = [one(im) for im in images]
    return outcome


def _read_one(pytesseract: Any, im: Image, lang: str, config: str, timeout: float) -> list[Line]:
    try:
        tsv = pytesseract.run_and_get_output(
            im, "tsv", lang, f"-c tessedit_create_tsv=1 {config}".strip(), 0, timeout
        )
    except pytesseract.TesseractNotFoundError as exc:
        cmd = pytesseract.pytesseract.tesseract_cmd
        raise MilrUserError(
            f"ocr critic: the tesseract binary {cmd!r} was not found; install it with "
            "`apt-get install tesseract-ocr` (Debian/Ubuntu) or pass tesseract_cmd=PATH, "
            "or use backend=easyocr"
        ) from exc
    except pytesseract.TesseractError as exc:
        raise MilrUserError(
            f"ocr critic: tesseract failed ({exc}); check tesseract_lang={lang!r} "
            f"(installed languages: `tesseract --list-langs`) and tesseract_config={config!r}"
        ) from exc
    except RuntimeError as exc:  # pytesseract's "Tesseract process timeout" (process killed)
        if "timeout" not in str(exc).lower():
            raise
        raise _TesseractTimeout(
            f"tesseract did not finish within timeout={timeout:g} s and was stopped; raise "
            "timeout= for large images, or check the tesseract binary"
        ) from None
    data = _tsv_columns(tsv)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for j, word in enumerate(data["text"]):
        if str(word).strip():
            groups.setdefault(
                (data["block_num"][j], data["par_num"][j], data["line_num"][j]), []
            ).append(j)
    lines: list[Line] = []
    for js in groups.values():
        x0 = min(data["left"][j] for j in js)
        y0 = min(data["top"][j] for j in js)
        x1 = max(data["left"][j] + data["width"][j] for j in js)
        y1 = max(data["top"][j] + data["height"][j] for j in js)
        conf = sum(max(0.0, float(data["conf"][j])) for j in js) / len(js) / 100.0
        text = " ".join(str(data["text"][j]).strip() for j in js)
        lines.append((text, [float(x0), float(y0), float(x1), float(y1)], conf))
    return lines
