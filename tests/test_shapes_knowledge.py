"""The shapes knowledge suite: its world-knowledge table, its files, and the shipped model's
partly-taught regime."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from milr.bench.suites import load_suite
from milr.geneval_rules import validate_metadata
from milr.shapes import knowledge, world
from milr.shapes.knowledge import FACTS, make_knowledge


def _outline(shape: str) -> dict[str, bool]:
    """What the geometry facts say, read off the rendered mask (12 × 12 pixels)."""
    m = world.shape_mask(shape)
    rows = [r for r in m if r.any()]
    top, bottom = rows[0].mean(), rows[-1].mean()  # share of the width the outline's ends fill
    round_ = (
        0.7 < m.mean() < 0.9
    )  # a disc fills pi/4 of its box; square 1, triangle and diamond 1/2
    return {
        "flat top": top > 0.5,
        "flat bottom": bottom > 0.5,
        "point on top": top <= 0.5 and not round_,
        "point at the bottom": bottom <= 0.5 and not round_,
        "round": bool(round_),
    }


def test_geometry_facts_hold_for_the_rendered_shapes():
    """Every geometry fact names the one shape of the world whose drawing fits the phrase."""
    checks = {
        "with no corners": lambda o: o["round"],
        "that is round": lambda o: o["round"],
        "with a point on top and a flat bottom": lambda o: o["point on top"] and o["flat bottom"],
        "with a flat bottom and no flat top": lambda o: o["flat bottom"] and not o["flat top"],
        "with a flat top and a flat bottom": lambda o: o["flat top"] and o["flat bottom"],
        "with a flat top": lambda o: o["flat top"],
        "with a point on top and a point at the bottom": lambda o: (
            o["point on top"] and o["point at the bottom"]
        ),
        "with a point at the bottom": lambda o: o["point at the bottom"],
    }
    geometry = [f for f in FACTS if f.category == "geometry"]
    assert {f.phrase for f in geometry} == set(checks)
    for fact in geometry:
        fits = [s for s in world.SHAPES if checks[fact.phrase](_outline(s))]
        assert fits == [fact.shape], (fact.phrase, fits)


def test_table_is_balanced_and_consistent():
    assert len(FACTS) == 16 and len({f.cue for f in FACTS}) == 16
    for cat in ("objects", "geometry"):
        facts = [f for f in FACTS if f.category == cat]
        assert sorted(f.shape for f in facts) == sorted(world.SHAPES * 2)
        # half of each category is taught only partly, one fact per shape
        partly = [f for f in facts if f.taught == knowledge.TAUGHT_PARTLY]
        assert sorted(f.shape for f in partly) == sorted(world.SHAPES)
    for f in FACTS:
        assert f.confusion in world.SHAPES and f.confusion != f.shape
        assert f.taught in (knowledge.TAUGHT_WELL, knowledge.TAUGHT_PARTLY)


def test_taught_plan_shape_follows_the_taught_share():
    rng = random.Random(0)
    wheel = next(f for f in FACTS if f.cue == "wheel")
    draws = [knowledge.taught_plan_shape(wheel, rng) for _ in range(4000)]
    assert set(draws) == {wheel.shape, wheel.confusion}
    assert draws.count(wheel.shape) / len(draws) == pytest.approx(wheel.taught, abs=0.03)


def test_suite_records_are_seeded_geneval_lines_with_wise_fields():
    recs = make_knowledge()
    assert len(recs) == 64 and recs == make_knowledge() and recs != make_knowledge(seed=1)
    assert [r["id"] for r in recs] == [f"k{i:03d}" for i in range(64)]
    by_cue = {f.cue: f for f in FACTS}
    for r in recs:
        validate_metadata(r, classes=world.SHAPES)
        fact = by_cue[r["cue"]]
        assert r["Prompt"] == r["prompt"] and r["Explanation"] == fact.explanation
        assert r["include"] == [{"class": fact.shape, "count": 1}] and r["tag"] == "single_object"
        assert fact.phrase in r["prompt"] and r["category"] == fact.category
        # the prompt never names the shape: the plan needs the fact
        assert not any(s in r["prompt"].split() for s in world.SHAPES)
    # every fact appears in all three frames
    assert all(len({r["prompt"] for r in recs if r["cue"] == f.cue}) == 3 for f in FACTS)


def test_every_suite_word_is_in_the_shapes_vocabulary():
    pytest.importorskip("tokenizers")
    from milr.shapes.recipe import WORDS, make_tokenizer

    tok = make_tokenizer()
    for r in make_knowledge(per_fact=3):
        ids = tok(r["prompt"], add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, r["prompt"]
    # the new words come after every ShapesEval word, so those keep their ids
    assert list(WORDS[-len(knowledge.KNOWLEDGE_WORDS) :]) == list(knowledge.KNOWLEDGE_WORDS)


def test_evalset_cli_writes_the_suite_and_bench_groups_it_by_category(tmp_path):
    out = tmp_path / "knowledge.jsonl"
    cmd = [sys.executable, "-m", "milr.shapes.evalset", "--suite", "knowledge", "--seed", "3"]
    done = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, check=True)
    assert "wrote 64 knowledge prompts" in done.stdout
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == make_knowledge(seed=3)
    suite = load_suite(out)
    assert suite.format == "shapes" and len(suite) == 64
    assert sorted(suite.groups) == ["geometry", "objects"]
    assert suite.prompts[0].metadata["include"] == lines[0]["include"]
    bad = subprocess.run(
        [*cmd, "--per-tag", "0", "--out", str(out)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--per-tag 0" in bad.stderr


def _greedy_shape_ranks(model, seqs, prompts):
    """For each prompt: the greedy plan and the rank of each shape at the plan's shape word."""
    import torch

    vocab = seqs.tok.get_vocab()
    inv = {v: k for k, v in vocab.items()}
    shape_ids = torch.tensor([vocab[s] for s in world.SHAPES])
    lm = model.model.language_model
    out = []
    for prompt in prompts:
        ids, _ = seqs.reasoning(prompt, "")
        words, order = [], None
        with torch.no_grad():
            for i in range(40):
                logits = model.lm_head(lm(input_ids=torch.tensor([ids])).last_hidden_state[0, -1])
                if i == 1:  # the plan's second word is the first object's shape
                    order = [world.SHAPES[j] for j in logits[shape_ids].argsort(descending=True)]
                nxt = int(logits.argmax())
                if nxt == seqs.eos:
                    break
                ids.append(nxt)
                words.append(inv[nxt])
        out.append((" ".join(words), order))
    return out


@pytest.fixture(scope="module")
def shipped():
    pytest.importorskip("torch")
    from transformers import JanusForConditionalGeneration

    from milr.shapes.model import model_path
    from milr.shapes.recipe import make_tokenizer
    from milr.shapes.train_lm import Sequences

    model = JanusForConditionalGeneration.from_pretrained(str(model_path())).eval()
    return model, Sequences(make_tokenizer())


def test_shipped_model_knows_the_facts_only_partly(shipped):
    """The testbed's regime: the greedy plan is often wrong, the right shape next in line."""
    model, seqs = shipped
    prompts = [(f, knowledge.fact_prompt(f, t)) for f in FACTS for t in knowledge.TEMPLATES]
    results = _greedy_shape_ranks(model, seqs, [p for _, p in prompts])
    right = top2 = 0
    for (fact, _), (plan, order) in zip(prompts, results, strict=True):
        objs = world.parse_plan(plan)
        right += bool(objs) and objs[0].shape == fact.shape
        top2 += fact.shape in order[:2]
    assert 0.3 <= right / len(prompts) <= 0.7
    assert top2 / len(prompts) >= 0.85
    # facts taught well are mostly right, facts taught partly mostly wrong
    well = [
        bool(world.parse_plan(plan)) and world.parse_plan(plan)[0].shape == f.shape
        for (f, _), (plan, _) in zip(prompts, results, strict=True)
        if f.taught == knowledge.TAUGHT_WELL
    ]
    assert np.mean(well) >= 0.7


def test_knowledge_stage_trains_only_the_new_rows(shipped):
    """Stage 5 leaves every weight but the knowledge words' embedding rows bit-identical."""
    import torch

    from milr.shapes.train_lm import train_knowledge

    model, seqs = shipped
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        train_knowledge(model, random.Random(0), steps=3, batch=4)
        after = model.state_dict()
        vocab = seqs.tok.get_vocab()
        rows = sorted(vocab[w] for w in knowledge.KNOWLEDGE_WORDS)
        key = "model.language_model.embed_tokens.weight"
        for k, v in after.items():
            if k in (key, "lm_head.weight"):  # tied
                keep = torch.ones(v.shape[0], dtype=torch.bool)
                keep[rows] = False
                assert torch.equal(v[keep], before[k][keep])
                assert not torch.equal(v[rows], before[k][rows])
            else:
                assert torch.equal(v, before[k]), k
        assert all(p.requires_grad for p in model.parameters())
    finally:
        model.load_state_dict(before)


def test_the_critic_passes_exactly_one_object_of_the_right_shape():
    from milr.critics.shapes import ShapesCritic

    critic = ShapesCritic()
    rec = next(r for r in make_knowledge() if r["cue"] == "wheel")
    assert rec["exclude"][0] == {"class": "circle", "count": 2}
    one = [world.Obj("circle", "red", 1, 1)]
    cases = {
        "one circle": (one, True),
        "a circle and a square": ([*one, world.Obj("square", "blue", 3, 3)], False),
        "two circles": ([*one, world.Obj("circle", "blue", 3, 3)], False),
        "the confusion": ([world.Obj("diamond", "red", 1, 1)], False),
    }
    for name, (objs, want) in cases.items():
        assert critic.score(world.render(objs), rec["prompt"], rec).passed is want, name


def test_plan_only_rows_name_the_shape_only_in_the_plan():
    """Stage 4's plan-only image rows: a knowledge prompt (no shape word), a one-object plan
    whose shape is drawn independently of the fact, and that plan's image tokens."""
    from milr.shapes.train_lm import one_object_scenes, plan_only_items

    scenes = one_object_scenes()
    assert len(scenes) == len(set(scenes)) == 4 * 6 * 16
    tokens = {o: f"tokens of {world.plan_text([o])}" for o in scenes}
    items = plan_only_items(800, random.Random(0), tokens)
    fact_of = {knowledge.fact_prompt(f, t): f for f in FACTS for t in knowledge.TEMPLATES}
    agree = 0
    for it in items:
        words = it["prompt"].split()
        assert not set(words) & (set(world.SHAPES) | set(world.PLURALS.values()))
        fact = fact_of[it["prompt"]]
        (obj,) = world.parse_plan(it["plan"])
        assert it["tokens"] == f"tokens of {it['plan']}"
        agree += obj.shape == fact.shape
    assert 0.15 <= agree / len(items) <= 0.35  # independent of the fact: 1 in 4
    assert items == plan_only_items(800, random.Random(0), tokens)  # seeded
