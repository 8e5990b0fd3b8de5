"""Tiny random checkpoints of the real transformers architectures behind the model critics.

Each builder writes a checkpoint directory (``save_pretrained`` of the model *and* its
processor) that loads with ``from_pretrained(path, local_files_only=True)`` exactly like a real
one, so tests and benchmarks exercise the critics' real loading and inference code offline:

* `grounding_dino` — ``GroundingDinoForObjectDetection`` (Swin backbone, BERT text encoder)
  with ``GroundingDinoProcessor``;
* `owlv2` — ``Owlv2ForObjectDetection`` with ``Owlv2Processor`` (CLIP byte-level BPE);
* `blip_vqa` — ``BlipForQuestionAnswering`` with ``BlipProcessor``;
* `git_vqa` — ``GitForCausalLM`` with ``GitProcessor``;
* `mask2former` — ``Mask2FormerForUniversalSegmentation`` (Swin, 80 COCO classes named as
  GenEval does) with ``Mask2FormerImageProcessor``.

Tokenizers are built locally: a WordPiece vocabulary of the given words plus every letter and
``##letter`` (so any lower-case word tokenizes), and for OWLv2 a byte-level BPE over the 256
byte symbols with no merges. ``width`` sets the hidden sizes: the defaults make models of a few
hundred kilobytes for tests; benchmarks pass real widths (e.g. 256/768) with few layers.
Weights are seeded (``seed``), so a builder called twice writes identical checkpoints.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

#: Words every tiny BERT vocabulary holds (questions, answers, GenEval colours, test objects).
BASE_WORDS: tuple[str, ...] = (
    "yes", "no", "is", "this", "a", "an", "the", "are", "there", "of", "photo", "and",
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
    "square", "circle", "thing", "car", "cars", "dog", "cat", "bear", "teddy", "apple",
)  # fmt: skip
_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_PUNCT = (".", "?", ",", "!", "'", "-")


def bert_tokenizer(words: tuple[str, ...] = BASE_WORDS, *, decoder_tokens: bool = False) -> Any:
    """A lower-casing WordPiece `BertTokenizer` over ``words`` + letters (+ BLIP's [DEC]/[ENC])."""
    from transformers import BertTokenizer

    vocab: list[str] = [*_SPECIALS, *_PUNCT, *string.digits]
    for w in (*words, *string.ascii_lowercase, *("##" + c for c in string.ascii_lowercase)):
        if w not in vocab:
            vocab.append(w)
    kwargs: dict[str, Any] = {}
    if decoder_tokens:  # BLIP's text decoder starts answers with [DEC]; the encoder uses [ENC]
        vocab += ["[DEC]", "[ENC]"]
        kwargs["bos_token"] = "[DEC]"
        kwargs["extra_special_tokens"] = ["[ENC]"]
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, **kwargs)


def clip_tokenizer() -> Any:
    """A CLIP byte-level BPE tokenizer with the 256 byte symbols (and their ``</w>`` forms), no merges."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    vocab = [*alphabet, *(c + "</w>" for c in alphabet), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[])


def _swin(image_size: int, width: int, **kwargs: Any) -> Any:
    from transformers import SwinConfig

    heads = [1, 1, 2, 2] if width < 64 else [width // 32 * k for k in (1, 2, 4, 8)]
    return SwinConfig(
        image_size=image_size, patch_size=4, embed_dim=width, depths=[1, 1, 1, 1],
        num_heads=heads, window_size=2 if width < 64 else 7, **kwargs,
    )  # fmt: skip


def _save(model: Any, processor: Any, path: str | Path) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def grounding_dino(
    path: str | Path,
    *,
    width: int = 32,
    text_width: int = 32,
    image_size: int = 96,
    num_queries: int = 30,
    backbone_width: int = 16,
    heads: int = 2,
    words: tuple[str, ...] = BASE_WORDS,
    seed: int = 0,
) -> Path:
    """Write a tiny random GroundingDINO checkpoint (model + processor) to ``path``."""
    import torch
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    tok = bert_tokenizer(words)
    text = BertConfig(
        vocab_size=len(tok), hidden_size=text_width, num_hidden_layers=1, num_attention_heads=heads,
        intermediate_size=2 * text_width, max_position_embeddings=64,
    )  # fmt: skip
    config = GroundingDinoConfig(
        backbone_config=_swin(image_size, backbone_width, out_indices=[2, 3, 4]), text_config=text,
        d_model=width, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=2 * width,
        decoder_ffn_dim=2 * width, encoder_attention_heads=heads, decoder_attention_heads=heads,
        num_queries=num_queries, max_text_len=64, encoder_n_points=2, decoder_n_points=2,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config).eval()
    size = {"shortest_edge": image_size, "longest_edge": 2 * image_size}
    proc = GroundingDinoProcessor(GroundingDinoImageProcessor(size=size), tok)
    return _save(model, proc, path)


def owlv2(
    path: str | Path,
    *,
    width: int = 32,
    text_width: int | None = None,
    heads: int = 2,
    image_size: int = 64,
    patch: int = 16,
    seed: int = 0,
) -> Path:
    """Write a tiny random OWLv2 checkpoint (model + processor) to ``path``."""
    import torch
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    tok = clip_tokenizer()
    tok.model_max_length = 16
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    tw = text_width or width
    config = Owlv2Config(
        text_config=dict(
            vocab_size=len(tok), hidden_size=tw, intermediate_size=2 * tw,
            num_hidden_layers=1, num_attention_heads=heads, max_position_embeddings=16, **ids,
        ),
        vision_config=dict(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1,
            num_attention_heads=heads, image_size=image_size, patch_size=patch,
        ),
        projection_dim=tw,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    proc = Owlv2Processor(
        Owlv2ImageProcessor(size={"height": image_size, "width": image_size}), tok
    )
    return _save(model, proc, path)


def blip_vqa(
    path: str | Path,
    *,
    width: int = 32,
    heads: int = 2,
    image_size: int = 32,
    words: tuple[str, ...] = BASE_WORDS,
    seed: int = 0,
) -> Path:
    """Write a tiny random BLIP VQA checkpoint (model + processor) to ``path``."""
    import torch
    from transformers import BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    tok = bert_tokenizer(words, decoder_tokens=True)
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width,
            num_hidden_layers=1, num_attention_heads=heads, encoder_hidden_size=width,
            max_position_embeddings=64, bos_token_id=tok.bos_token_id,
            pad_token_id=tok.pad_token_id, sep_token_id=tok.sep_token_id,
            initializer_range=0.3,  # large enough that answers depend on the image
        ),
        vision_config=dict(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1,
            num_attention_heads=heads, image_size=image_size, patch_size=16,
            initializer_range=0.5,  # BLIP's default (1e-10) makes random image features ~0
        ),
        projection_dim=width,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = BlipForQuestionAnswering(config).eval()
    proc = BlipProcessor(BlipImageProcessor(size={"height": image_size, "width": image_size}), tok)
    return _save(model, proc, path)


def git_vqa(
    path: str | Path,
    *,
    width: int = 32,
    heads: int = 2,
    image_size: int = 32,
    words: tuple[str, ...] = BASE_WORDS,
    seed: int = 0,
) -> Path:
    """Write a tiny random GIT (VQA-style causal LM) checkpoint (model + processor) to ``path``."""
    import torch
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    tok = bert_tokenizer(words)
    config = GitConfig(
        vision_config=dict(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1,
            num_attention_heads=heads, image_size=image_size, patch_size=16,
        ),
        vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width,
        num_hidden_layers=1, num_attention_heads=heads, max_position_embeddings=64,
        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = GitForCausalLM(config).eval()
    images = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return _save(model, GitProcessor(images, tok), path)


def mask2former(
    path: str | Path,
    *,
    width: int = 32,
    image_size: int = 64,
    num_queries: int = 12,
    backbone_width: int = 16,
    heads: int = 2,
    seed: int = 0,
) -> Path:
    """Write a tiny random Mask2Former (COCO instance: GenEval's 80 class names) to ``path``."""
    import torch
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
    )

    from milr.geneval_rules import GENEVAL_CLASSES

    id2label = dict(enumerate(GENEVAL_CLASSES))
    config = Mask2FormerConfig(
        backbone_config=_swin(
            image_size, backbone_width, out_features=["stage1", "stage2", "stage3", "stage4"]
        ),
        hidden_dim=width, num_queries=num_queries, encoder_layers=1, decoder_layers=2,
        dim_feedforward=2 * width, num_attention_heads=heads, mask_feature_size=width,
        feature_size=width, encoder_feedforward_dim=2 * width,
        id2label=id2label, label2id={v: k for k, v in id2label.items()},
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    proc = Mask2FormerImageProcessor(
        size={"shortest_edge": image_size, "longest_edge": 2 * image_size}
    )
    return _save(model, proc, path)
