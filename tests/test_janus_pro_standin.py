"""Janus-Pro stand-ins (issue #12.4): the real 1B/7B config, tokenizer and processor files with
tiny random weights. Prompts are checked token for token against the reference paths.

Data: ``../shared/data/janus-pro`` (or ``MILR_SHARED_DATA``); skipped when absent.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import milr  # noqa: E402
from milr.models.janus_prompts import PAPER_INSTRUCTION, PAPER_SYSTEM  # noqa: E402

PROMPT = "a photo of a cat left of a red dog"
COT = "A grey cat sits on the left; a red dog stands on the right."
IDS = {  # (BOS, EOS, PAD, BOI) per checkpoint
    "1b": (100000, 100001, 100002, 100003),
    "7b": (100000, 100001, 100015, 100016),
}


@pytest.fixture(scope="module")
def janus_pro(shared_data):
    root = shared_data / "janus-pro"
    if not (root / "1b" / "tokenizer.json").is_file():
        pytest.skip(f"Janus-Pro stand-in files not found under {root}")
    return root


@pytest.fixture(scope="module")
def standins(janus_pro, tmp_path_factory):
    """``{(size, style): generator}``, built lazily: 1B at the real 384 px, 7B at 64 px."""
    from milr.testing import save_janus_pro_standin

    dirs = {
        "1b": save_janus_pro_standin(janus_pro / "1b", tmp_path_factory.mktemp("1b") / "m"),
        "7b": save_janus_pro_standin(
            janus_pro / "7b", tmp_path_factory.mktemp("7b") / "m", image_size=64
        ),
    }
    cache: dict[tuple[str, str], object] = {}

    def get(size: str, style: str = "paper"):
        if (size, style) not in cache:
            cache[size, style] = milr.load_generator(dirs[size], device="cpu", prompt_style=style)
        return cache[size, style]

    get.dirs = dirs  # type: ignore[attr-defined]
    return get


@pytest.mark.parametrize("size", ["1b", "7b"])
def test_special_token_ids_and_single_token_specials(standins, size):
    gen = standins(size)
    bos, eos, pad, boi = IDS[size]
    assert gen._ids == {"bos": bos, "eos": eos, "pad": pad, "boi": boi}
    tok = gen.tokenizer
    for special in ("<|User|>", "<|Assistant|>", "<begin_of_image>", "<image_placeholder>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1, special
    assert tok.convert_tokens_to_ids("<｜▁pad▁｜>") == pad
    assert tok.convert_tokens_to_ids("<begin_of_image>") == boi


def test_published_encoding_and_round_trip(standins):
    tok = standins("1b").tokenizer
    assert tok("Hello, how are you?")["input_ids"] == [100000, 17464, 11, 946, 418, 340, 30]
    text = "a photo of a cat.\nThe dog"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


@pytest.mark.parametrize("size", ["1b", "7b"])
def test_paper_style_prompts_equal_the_authors_layout(standins, size):
    """Reference: the authors' strings, encoded as their code does (tokenizer adds BOS)."""
    gen = standins(size, "paper")
    tok = gen.tokenizer
    bos, _, pad, boi = IDS[size]
    instruction = PAPER_INSTRUCTION.replace("{prompt}", PROMPT).strip()
    reasoning_text = f"{PAPER_SYSTEM}\n\nUser: {instruction}\n\nAssistant:"
    assert gen.reasoning_prompt_ids(PROMPT) == tok(reasoning_text)["input_ids"]
    image_text = f"User: {PROMPT}. {COT}\n\nAssistant:<begin_of_image>"
    cond, uncond = gen.image_prompt_ids(gen.image_text(PROMPT, COT))
    assert cond == tok(image_text)["input_ids"]
    assert cond[0] == bos and cond[-1] == boi and cond.count(bos) == 1
    assert uncond == [bos] + [pad] * (len(cond) - 2) + [boi]
    assert (
        gen.image_prompt_ids(gen.image_text(PROMPT, None))[0]
        == tok(f"User: {PROMPT}\n\nAssistant:<begin_of_image>")["input_ids"]
    )


@pytest.mark.parametrize("size", ["1b", "7b"])
def test_hf_style_prompts_equal_the_processor_and_generate(standins, size):
    """Reference: chat template + processor, and generate's unconditional masking."""
    from transformers import JanusProcessor

    gen = standins(size, "hf")
    processor = JanusProcessor.from_pretrained(standins.dirs[size])
    assert processor.use_default_system_prompt

    def chat(text: str) -> str:
        messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    instruction = PAPER_INSTRUCTION.replace("{prompt}", PROMPT).strip()
    ref = processor(text=[chat(instruction)], generation_mode="text")["input_ids"][0].tolist()
    assert gen.reasoning_prompt_ids(PROMPT) == ref
    shown = gen.tokenizer.decode(ref, skip_special_tokens=False)
    assert shown.startswith("<｜begin▁of▁sentence｜>You are a helpful language and vision")
    inputs = processor(text=[chat(f"{PROMPT}. {COT}")], generation_mode="image")
    ids = inputs["input_ids"]
    cond, uncond = gen.image_prompt_ids(gen.image_text(PROMPT, COT))
    assert cond == ids[0].tolist()
    cfg = gen.model.generation_config  # JanusForConditionalGeneration.generate's masking
    rows = ids.repeat(2, 1)
    mask = (rows[1:] != cfg.bos_token_id) & (rows[1:] != cfg.generation_kwargs["boi_token_id"])
    rows[1:].masked_fill_(mask, cfg.pad_token_id)
    assert uncond == rows[1].tolist()
    text = gen.tokenizer.decode(cond, skip_special_tokens=False)
    assert (
        text
        == f"<｜begin▁of▁sentence｜><|User|>: {PROMPT}. {COT}\n\n<|Assistant|>:<begin_of_image>"
    )


def test_self_judge_input_begins_with_bos_once(standins):
    """The real processor prefixes its system prompt: BOS must stay at position 0, once."""
    from PIL import Image

    gen = standins("1b")
    img = Image.new("RGB", (40, 40), (200, 30, 30))
    inputs = gen.understanding_inputs([img], ["Does this image show a cat? Answer yes or no."])
    ids = inputs["input_ids"][0].tolist()
    assert ids[0] == 100000 and ids.count(100000) == 1
    shown = gen.tokenizer.decode(ids[:20], skip_special_tokens=False)
    assert shown.startswith("<｜begin▁of▁sentence｜>You are a helpful language and vision")


def test_one_milr_step_on_the_1b_standin(standins):
    from milr.optimizer import MILR, MILRConfig

    gen = standins("1b")
    critic = milr.build_critic("color:target=red")
    cfg = MILRConfig(mode="both", max_steps=1, threshold=0.0, text_k=0.5, image_k=0.01)
    res = MILR(gen, critic, cfg).run(PROMPT)
    assert res.n_steps == 1 and res.image_prefix_len == 5 and res.final_image.size == (384, 384)
    assert res.prompts["style"] == "paper"
    assert res.prompts["reasoning"].startswith("<｜begin▁of▁sentence｜>You are an assistant")
    assert res.prompts["image"].endswith("Assistant:<begin_of_image>")


def test_bf16_on_cpu_keeps_the_vq_decoder_in_float32(janus_pro, tmp_path):
    from milr.testing import save_janus_pro_standin

    d = save_janus_pro_standin(janus_pro / "1b", tmp_path / "bf16", dtype="bfloat16", image_size=64)
    gen = milr.load_generator(d, device="cpu", dtype="bf16")
    assert gen.dtype == torch.bfloat16
    assert gen.model.model.vqmodel.decoder.conv_in.weight.dtype == torch.float32
    assert gen.model.model.language_model.embed_tokens.weight.dtype == torch.bfloat16
    out = gen.sample_image_tokens(gen.image_text(PROMPT, None), generator=gen.rng(0), capture=2)
    assert out.latents.dtype == torch.bfloat16
    assert gen.decode(out.tokens)[0].size == (64, 64)


def test_pad_and_boi_fall_back_to_the_tokenizer_and_disagreement_warns(standins, tmp_path):
    """7B ids (100015/100016) differ from 1B's: a generation config without them, or with
    1B's by mistake, must not silently use the wrong ids."""
    import json
    import shutil
    import warnings

    d = tmp_path / "7b"
    shutil.copytree(standins.dirs["7b"], d)
    cfg_path = d / "generation_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("pad_token_id")
    cfg["generation_kwargs"] = {}
    cfg_path.write_text(json.dumps(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # agreeing (absent) sources: no warning
        gen = milr.load_generator(d, device="cpu")
    assert (gen._ids["pad"], gen._ids["boi"]) == (100015, 100016)  # the tokenizer's
    cfg.update(pad_token_id=100002, generation_kwargs={"boi_token_id": 100003})  # 1B's ids
    cfg_path.write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="PAD=100002 but the tokenizer says 100015"):
        gen = milr.load_generator(d, device="cpu")
    assert (gen._ids["pad"], gen._ids["boi"]) == (100002, 100003)  # as generate() would use
