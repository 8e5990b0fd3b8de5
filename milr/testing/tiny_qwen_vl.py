"""A tiny Qwen2.5-VL judge (the architecture of Qwen/Qwen2.5-VL-7B-Instruct and UnifiedReward).

`qwen2_5_vl` writes a checkpoint directory -- ``Qwen2_5_VLForConditionalGeneration`` and
``Qwen2_5_VLProcessor`` saved with ``save_pretrained`` -- that loads with
``AutoModelForImageTextToText`` / ``AutoProcessor`` like the real one (vision tower of one block,
language model of one layer, width 32, a word-level vocabulary of a few hundred kilobytes in
all), so the ``judge`` critic's real loading, chat template, image tokens, M-RoPE positions and
``generate()`` run offline.

Its weights are seeded and then *scripted*: attention and MLP outputs are zeroed, so each
position's hidden state is its own token's embedding, and the chain ``assistant`` -> ``yes`` ->
``final`` -> ``score`` -> ``4`` -> ``<|im_end|>`` is written into orthogonal embeddings and the
output head. Whatever the image and prompt, its next token after the generation prompt is
``yes`` (``yesno`` rubric: score ~1.0) and its greedy answer is ``yes final score 4``
(``likert5``: 0.75). Real architecture, real inference; only the weights are set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Words of the tiny vocabulary (anything else is ``<unk>``).
WORDS: tuple[str, ...] = (
    "yes", "no", "final", "score", "1", "2", "3", "4", "5", "assistant", "user", "system",
    "a", "an", "the", "of", "on", "in", "is", "does", "this", "image", "show", "answer",
    "with", "one", "word", "photo", "cat", "sofa", "red", "apple", ":", ".", "?", ",",
)  # fmt: skip
SPECIALS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip
#: Qwen's chat layout, shortened: ``<|im_start|>ROLE\nCONTENT<|im_end|>\n`` per message.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAIN: tuple[str, ...] = ("assistant", "yes", "final", "score", "4", "<|im_end|>")


def _tokenizer() -> tuple[Any, dict[str, int]]:
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    while len(vocab) < 96:
        vocab[f"w{len(vocab)}"] = len(vocab)
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    return tok, vocab


def qwen2_5_vl(path: str | Path, seed: int = 0) -> Path:
    """Write the scripted tiny Qwen2.5-VL checkpoint (model and processor) to `path`."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tok, vocab = _tokenizer()
    ids = {k: vocab[k] for k in ("<|endoftext|>", "<|im_end|>")}
    text = dict(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, tie_word_embeddings=False,
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )  # fmt: skip
    vision = dict(
        depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
        patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
        fullatt_block_indexes=[0],
    )  # fmt: skip
    config = Qwen2_5_VLConfig(
        vision_config=vision, text_config=text,
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    script_greedy_chain(model, vocab, CHAIN)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(out)
    return out


def script_greedy_chain(model: Any, vocab: dict[str, int], chain: Sequence[str]) -> None:
    """Rewire a decoder-only vision-language model (``model.model.language_model`` and
    ``model.lm_head``) in place so that greedy decoding follows `chain`: after ``chain[k]``
    comes ``chain[k + 1]``, whatever the input.

    Attention and MLP outputs are zeroed, so each position's hidden state is its own token's
    embedding; the chain is written into orthogonal embeddings and the output head (needs
    ``len(chain) - 1 <= hidden_size``). Real architecture and real ``generate()``; only the
    weights are set.
    """
    import torch

    lm = model.model.language_model
    with torch.no_grad():
        for layer in lm.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for k, (tok_now, tok_next) in enumerate(zip(chain, chain[1:])):
            basis = torch.zeros(lm.config.hidden_size)
            basis[k] = 1.0
            lm.embed_tokens.weight[vocab[tok_now]] = basis
            model.lm_head.weight[vocab[tok_next]] = 50.0 * basis
