"""What the `shapes` model is: sizes, vocabulary, `JanusConfig`, prompt formats (``milr.json``),
and the small helpers every training stage shares (random scenes, tensors, the log).

Training lives in `milr.shapes.train` (command line, saving), `milr.shapes.train_vq` (stages 1-2)
and `milr.shapes.train_lm` (stages 3-4).
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from milr.models.wordlevel import (  # noqa: F401 - re-exported names
    BOI,
    BOS,
    EOI,
    EOS,
    IMAGE,
    PAD,
    ROLE_TOKENS,
    UNK,
    word_level_tokenizer,
)
from milr.shapes import world
from milr.shapes.knowledge import KNOWLEDGE_WORDS

# --- model sizes ----------------------------------------------------------------------------
HIDDEN = 128
LAYERS = 4
HEADS = 4
CODEBOOK = 128
PATCH = 16  # VQ downsampling: 64 px -> 4×4 = 16 image tokens, one per grid cell

# --- tokenizer ------------------------------------------------------------------------------

WORDS = (
    (  # noqa: SIM905
        ". , : ; ! ? ' \" ( ) - a an the of and or with on in at to is are photo image picture "
        "row column left right above below one two three four 1 2 3 4 plan describe draw write "
        "short visualization objects colors positions "
    ).split()
    + list(world.SHAPES)
    + list(world.PLURALS.values())
    + list(world.COLORS)
    + list(world.CELL_WORDS)
    # the knowledge suite's words come last, so every word above keeps its id
    + list(KNOWLEDGE_WORDS)
)


def vocabulary() -> dict[str, int]:
    """Word → id; special tokens first."""
    vocab: dict[str, int] = {}
    for tok in [UNK, BOS, EOS, PAD, BOI, EOI, IMAGE, *ROLE_TOKENS, *WORDS]:
        vocab.setdefault(tok, len(vocab))
    return vocab


def make_tokenizer():
    """A word-level fast tokenizer over the shapes vocabulary (offline, deterministic)."""
    return word_level_tokenizer(vocabulary(), model_max_length=512)


def janus_config():
    """The `JanusConfig` of the shapes model."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    vocab = vocabulary()
    n = len(vocab)
    vocab_size = 64 * math.ceil(n / 64)
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=3 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=256,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[PAD],
        tie_word_embeddings=True,
    )
    vision = JanusVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=world.IMAGE_SIZE,
        patch_size=PATCH,
        projection_dim=HIDDEN,
        num_image_tokens=(world.IMAGE_SIZE // PATCH) ** 2,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=CODEBOOK,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1] * (int(math.log2(PATCH)) + 1),  # one 2× stage per factor
        num_res_blocks=1,  # a non-linear block per level: the encoder must bind colour and shape
        projection_dim=HIDDEN,
        image_token_embed_dim=HIDDEN,
        num_hidden_layers=2,
    )
    return JanusConfig(
        text_config=text, vision_config=vision, vq_config=vq, image_token_id=vocab[IMAGE]
    )


# --- prompt formats ---------------------------------------------------------------------------

#: Prompt formats written to ``milr.json`` (see the adapter's janus.py for how they are used).
SETTINGS: dict[str, Any] = {
    "comment": "prompt formats and run defaults of the shapes model; written by milr.shapes.train",
    "reasoning_template": "<|User|>: {instruction}\n\n<|Assistant|>:",
    "reasoning_instruction": "write a short plan of {prompt}",
    "image_template": "<|User|>: {text}\n\n<|Assistant|>:",
    "image_text_template": "{prompt}. {reasoning}",
    "uncond": "pad",
    "max_reasoning_tokens": 40,
    "add_bos": True,
    # plans are 5-20 tokens: the paper's M = int(0.1 * L) is 0 for most of them
    "text_prefix": "at_least_one",
}


# --- data -----------------------------------------------------------------------------------


def random_scene(rng: random.Random, max_objects: int = 4) -> list[world.Obj]:
    """A scene of 1..max_objects random objects in distinct cells."""
    n = rng.randint(1, max_objects)
    cells = rng.sample([(r, c) for r in range(world.GRID) for c in range(world.GRID)], n)
    return [
        world.Obj(rng.choice(world.SHAPES), rng.choice(list(world.COLORS)), r, c) for r, c in cells
    ]


def to_tensor(arrays):
    """uint8 ``(B, H, W, 3)`` arrays → float ``(B, 3, H, W)`` in [-1, 1]."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def log(msg: str, fh=None) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if fh is not None:
        fh.write(line + "\n")
        fh.flush()
