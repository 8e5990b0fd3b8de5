"""`save_tiny_janus`: a tiny random Janus checkpoint in transformers format, built offline.

Tests, docs and users run the whole MILR pipeline on it without a model hub: a Llama text
model (hidden 64, 2 layers, vocabulary 512), a VQ decoder small enough for CPU, and a
processor with a word-level tokenizer. The weights are random, so images are noise; the point
is that every code path (reasoning, CFG image sampling, decoding, optimisation) runs for real.
"""

from __future__ import annotations

import json
from pathlib import Path

#: Special tokens of the tiny tokenizer (the real Janus-Pro uses DeepSeek's spellings).
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

_WORD_TEXT = (
    ". , : ; ! ? ' \" ( ) - a an the of and or with on in to at is are be it this that "
    "image photo picture drawing scene background foreground left right above below top bottom "
    "center middle next near behind front small large big tiny red orange yellow green blue "
    "purple pink brown black white gray grey cyan square squares circle circles triangle "
    "triangles star stars shape shapes object objects one two three four five six seven eight "
    "nine ten no only there some each both write short visualization plan describe draw "
    "prompt about words stated attributes counts relations colour color position number dog "
    "cat car cup bird tree house person text sign clock apple banana"
)
_WORDS = tuple(_WORD_TEXT.split())


def _vocab(size: int) -> dict[str, int]:
    specials = [UNK, BOS, EOS, PAD, BOI, EOI, IMAGE, *ROLE_TOKENS]
    vocab: dict[str, int] = {}
    for tok in [*specials, *_WORDS]:
        vocab.setdefault(tok, len(vocab))
    i = 0
    while len(vocab) < size:
        vocab[f"w{i}"] = len(vocab)
        i += 1
    return vocab


def _tokenizer(vocab_size: int):
    return word_level_tokenizer(_vocab(vocab_size), model_max_length=1024)


def tiny_janus_config(
    image_size: int = 64, vocab_size: int = 512, hidden: int = 64, layers: int = 2
):
    """The `JanusConfig` of the tiny model; image tokens = (image_size/16)²."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    vocab = _vocab(vocab_size)
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[PAD],
    )
    patch = 16
    vision = JanusVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
        projection_dim=hidden,
        num_image_tokens=(image_size // patch) ** 2,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=64,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1, 1, 1, 1, 1],
        num_res_blocks=1,
        projection_dim=hidden,
        image_token_embed_dim=hidden,
    )
    return JanusConfig(
        text_config=text, vision_config=vision, vq_config=vq, image_token_id=vocab[IMAGE]
    )


def save_tiny_janus(path: str | Path, seed: int = 0, image_size: int = 64) -> Path:
    """Write a tiny random Janus (model, processor, generation config) to `path`; return it.

    Also writes ``milr.json`` (reasoning capped at 24 tokens). Loads with
    ``JanusForConditionalGeneration.from_pretrained(path)`` and
    ``milr.load_generator(path)``. Deterministic for a given `seed`. ``image_size`` must be a
    multiple of 16 (the decoder upsamples each token 16×); 64 gives 16 image tokens.
    """
    import torch
    from transformers import (
        GenerationConfig,
        JanusForConditionalGeneration,
        JanusImageProcessor,
        JanusProcessor,
    )

    if image_size % 16 or image_size <= 0:
        from milr.errors import MilrUserError

        raise MilrUserError(f"image_size={image_size!r} must be a positive multiple of 16")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_janus_config(image_size=image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = JanusForConditionalGeneration(config)
        # Spread the codebook and image head, and amplify the decoder output, so tokens give
        # visibly different pixels and the CFG-fused distribution is not flat (random init is).
        with torch.no_grad():
            model.model.vqmodel.quantize.embedding.weight.normal_(0.0, 1.0)
            model.model.generation_head.vision_head.weight.mul_(20.0)
            model.model.vqmodel.decoder.conv_out.weight.mul_(10.0)
    model.eval()
    tokenizer = _tokenizer(config.text_config.vocab_size)
    vocab = tokenizer.get_vocab()
    model.generation_config = GenerationConfig(
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[PAD],
        generation_kwargs={"boi_token_id": vocab[BOI]},
    )
    model.save_pretrained(out)
    image_processor = JanusImageProcessor(
        size={"height": image_size, "width": image_size}, min_size=14
    )
    processor = JanusProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=config.vision_config.num_image_tokens,
    )
    processor.save_pretrained(out)
    # Random weights never emit EOS: cap the reasoning so the pipeline stays fast.
    settings = {"max_reasoning_tokens": 24}
    (out / "milr.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return out


#: Small files of a transformers-format Janus-Pro checkpoint that a stand-in copies verbatim.
STANDIN_FILES = (
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "chat_template.jinja",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
)


def save_janus_pro_standin(
    source: str | Path,
    path: str | Path,
    layers: int = 1,
    dtype: str = "float32",
    seed: int = 0,
    image_size: int | None = None,
) -> Path:
    """A Janus-Pro stand-in: the real config, tokenizer and processor, tiny random weights.

    `source` is a folder with a real checkpoint's small files (config.json and `STANDIN_FILES`,
    e.g. ``../shared/data/janus-pro/1b``; never shipped with milr). Token ids, vocabulary,
    ``image_token_id``, chat template and processor behaviour stay the real ones; widths shrink
    (text hidden 64 with `layers` layers, vision hidden 32, VQ ``base_channels`` 32) and the
    weights are random (seeded). ``image_size`` (a multiple of 16) shrinks the image grid for
    speed (default: the real 384 px, 576 tokens); `dtype` is what the weights are saved in.
    """
    import shutil

    import torch
    from transformers import JanusConfig, JanusForConditionalGeneration

    src, out = Path(source), Path(path)
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    text = cfg["text_config"]
    text.update(
        hidden_size=64, intermediate_size=128, num_hidden_layers=int(layers),
        num_attention_heads=4, num_key_value_heads=4, head_dim=16,
    )  # fmt: skip
    vision = cfg["vision_config"]
    size = int(image_size or vision["image_size"])
    vision.update(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, projection_dim=64,
        image_size=size, num_image_tokens=(size // int(vision["patch_size"])) ** 2,
    )  # fmt: skip
    vq = cfg["vq_config"]
    vq.update(
        base_channels=32, embed_dim=8, channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=1,
        latent_channels=32, projection_dim=64, image_token_embed_dim=64,
        num_patches=size // int(vision["patch_size"]),
    )  # fmt: skip
    for key in ("torch_dtype", "dtype"):
        for part in (cfg, text, vision, vq):
            part.pop(key, None)
    config = JanusConfig(**{k: v for k, v in cfg.items() if k not in ("architectures",)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = JanusForConditionalGeneration(config)
        with torch.no_grad():
            model.model.generation_head.vision_head.weight.mul_(20.0)
    model = model.to(getattr(torch, dtype)).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in STANDIN_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    if image_size is not None:
        pre = json.loads((out / "preprocessor_config.json").read_text(encoding="utf-8"))
        pre["size"] = {"height": size, "width": size}
        (out / "preprocessor_config.json").write_text(json.dumps(pre), encoding="utf-8")
        proc = json.loads((out / "processor_config.json").read_text(encoding="utf-8"))
        proc["num_image_tokens"] = (size // int(vision["patch_size"])) ** 2
        (out / "processor_config.json").write_text(json.dumps(proc), encoding="utf-8")
    # Random weights rarely say EOS: cap the reasoning so tests stay fast.
    (out / "milr.json").write_text(json.dumps({"max_reasoning_tokens": 12}), encoding="utf-8")
    return out
