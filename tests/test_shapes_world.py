"""The shapes world: rendering, ground truth, ShapesEval files, plans (no torch needed)."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest

from milr.geneval_rules import GENEVAL_COLORS, TAGS, relative_position, validate_metadata
from milr.shapes import world
from milr.shapes.evalset import make_shapeseval, random_metadata, write_shapeseval


def test_render_is_deterministic_and_exact():
    objs = [world.Obj("circle", "red", 0, 0), world.Obj("square", "blue", 2, 3)]
    a, b = world.render_array(objs), world.render_array(list(objs))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    # the square fills its 12 px box exactly, the background is white
    x0, y0, x1, y1 = (int(v) for v in objs[1].box)
    assert (a[y0:y1, x0:x1] == world.COLORS["blue"]).all()
    assert (a[:, 16:48][:, :, 0] == 255).sum() > 0 and tuple(a[63, 0]) == world.BACKGROUND
    # the circle's corners stay background
    assert tuple(a[2, 2]) == world.BACKGROUND and tuple(a[8, 8]) == world.COLORS["red"]


def test_render_rejects_bad_scenes():
    with pytest.raises(ValueError, match="two objects in cell"):
        world.render_array([world.Obj("circle", "red", 1, 1), world.Obj("square", "red", 1, 1)])
    with pytest.raises(ValueError, match="outside"):
        world.render_array([world.Obj("circle", "red", 4, 0)])
    with pytest.raises(ValueError, match="unknown colour"):
        world.render_array([world.Obj("circle", "pink", 0, 0)])


def test_shape_masks_differ():
    masks = {s: world.shape_mask(s) for s in world.SHAPES}
    areas = {s: int(m.sum()) for s, m in masks.items()}
    assert areas["square"] == 144 and areas["triangle"] < areas["circle"] < areas["square"]
    assert not np.array_equal(masks["triangle"], masks["diamond"])


def test_relation_matches_rules_engine():
    rng = random.Random(0)
    for _ in range(300):
        a = world.Obj("circle", "red", rng.randrange(4), rng.randrange(4))
        b = world.Obj("square", "red", rng.randrange(4), rng.randrange(4))
        rels = relative_position(a.box, b.box)
        for rel in world.RELATIONS:
            assert world.relation_holds(a.box, b.box, rel) == (rel in rels)


def test_shapeseval_file(tmp_path):
    recs = make_shapeseval()
    assert len(recs) >= 300
    assert {r["tag"] for r in recs} == set(TAGS)
    assert recs == make_shapeseval()  # seeded
    assert recs != make_shapeseval(seed=1)
    for r in recs:
        validate_metadata(r, classes=world.SHAPES, colors=GENEVAL_COLORS)
        assert r["prompt"].startswith("a photo of ")
    path = write_shapeseval(tmp_path / "se.jsonl", per_tag=5)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 30 and lines == make_shapeseval(per_tag=5)


def test_example_prompts_exist():
    prompts = {r["prompt"] for r in make_shapeseval()}
    assert any(p.startswith("a photo of two ") for p in prompts)
    assert any(" left of " in p for p in prompts)


@pytest.mark.parametrize("tag", TAGS)
def test_scene_for_satisfies_its_metadata(tag):
    from milr.critics.shapes import ShapesCritic

    critic = ShapesCritic()
    rng = random.Random(tag)
    for _ in range(20):
        meta = random_metadata(rng, tag)
        objs = world.scene_for(meta, rng)
        truth = world.ground_truth(objs)
        assert [d["box"] for d in truth] == sorted(
            (o.box for o in objs), key=lambda b: (b[1], b[0])
        )
        res = critic.score(world.render(objs), meta["prompt"], meta)
        assert res.passed is True and res.score == 1.0, (meta, objs, res.details["reason"])


def test_plan_round_trip():
    rng = random.Random(3)
    for _ in range(50):
        objs = world.scene_for(random_metadata(rng), rng)
        text = world.plan_text(objs)
        assert world.parse_plan(text) == sorted(objs, key=lambda o: (o.row, o.col))
    assert world.plan_text([world.Obj("circle", "red", 0, 1)]) == "red circle at r1c2 ."
    assert world.parse_plan("garbage red circle at r9c1 . blue square at r2c2.") == [
        world.Obj("square", "blue", 1, 1)
    ]


def test_shipped_training_record_names_no_local_path():
    """The shipped weights' training record names reused weights by content, not by path."""
    from milr.shapes.model import model_path

    d = model_path()
    meta = json.loads((d / "training.json").read_text())
    assert set(meta["lm_from"]) == {"model.safetensors sha256"}
    for name in ("training.json", "train.log"):
        text = (d / name).read_text()
        assert not any(p in text for p in ("/tmp", "/work", "/home", ":\\")), name


@pytest.mark.slow
def test_training_script_smoke(tmp_path):
    """A few steps of every training stage write a checkpoint the Janus adapter loads."""
    pytest.importorskip("torch")
    from milr.generator import load_generator
    from milr.shapes import train
    from milr.shapes.model import model_path

    out = tmp_path / "m"
    train.main(
        [
            "--out",
            str(out),
            "--vq-steps",
            "2",
            "--vq-full-steps",
            "1",
            "--decoder-steps",
            "1",
            "--scenes",
            "48",
            "--lm-steps",
            "2",
            "--plan-finetune-steps",
            "2",
            "--plan-finetune-scenes",
            "24",
            "--knowledge-steps",
            "2",
        ]
    )
    assert model_path(out) == out.resolve()  # manifest written and verified
    meta = json.loads((out / "training.json").read_text())
    assert meta["lm_steps"] == 2 and meta["plan_finetune_steps"] == 2
    assert meta["seconds_total"] > 0
    # stages 4b and 5 alone on those weights records them by content, never by local path
    again = tmp_path / "k"
    train.main(
        ["--out", str(again), "--lm-from", str(out), "--knowledge-steps", "1"]
        + ["--plan-finetune-steps", "1", "--plan-finetune-scenes", "24"]
    )
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    meta = json.loads((again / "training.json").read_text())
    assert meta["lm_from"] == {"model.safetensors sha256": digest}
    for name in ("training.json", "train.log"):
        assert str(tmp_path) not in (again / name).read_text(), name
    gen = load_generator(str(out), device="cpu")
    assert gen.image_token_count == 16  # one token per grid cell
    text = gen.image_text("a photo of a red circle", None)
    toks = gen.sample_image_tokens(text, batch=1, generator=gen.rng(0)).tokens
    assert toks.shape == (1, 16) and gen.decode(toks)[0].size == (64, 64)


@pytest.mark.parametrize(
    "args, named",
    [
        (["--scenes", "10"], "--scenes 10 is fewer than one batch; pass at least 24"),
        (["--plan-finetune-scenes", "16"], "--plan-finetune-scenes 16 is fewer than one batch"),
        (["--lm-steps", "-1"], "--lm-steps -1 is negative; pass 0 or more"),
        (["--knowledge-steps", "-3"], "--knowledge-steps -3 is negative"),
        (["--threads", "0"], "--threads 0 must be at least 1"),
        (["--plan-finetune-lr", "0"], "--plan-finetune-lr 0.0 must be positive"),
    ],
)
def test_training_refuses_bad_numbers_before_any_work(tmp_path, capsys, args, named):
    """Too few scenes for one batch of 24 rows, a negative step count, no threads, a zero
    learning rate: exit 2 naming the value, before any training."""
    from milr.shapes import train

    with pytest.raises(SystemExit) as exc:
        train.main(["--out", str(tmp_path / "m"), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert named in err
    assert not (tmp_path / "m").exists()  # refused before the output directory is made
