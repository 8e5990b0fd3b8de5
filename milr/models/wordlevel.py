"""Offline word-level tokenizers for small Janus checkpoints (the tiny test model, `shapes`).

Both ship a `PreTrainedTokenizerFast` over a fixed vocabulary, with the special tokens Janus'
processor and milr's adapter need and the SFT role markers as ordinary added tokens.
"""

from __future__ import annotations

from typing import Any

BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"
BOI, EOI, IMAGE = "<begin_of_image>", "<end_of_image>", "<image_placeholder>"
SPECIAL_TOKENS = (BOS, EOS, PAD, UNK, BOI, EOI, IMAGE)
ROLE_TOKENS = ("<|User|>", "<|Assistant|>")


def word_level_tokenizer(vocab: dict[str, int], model_max_length: int) -> Any:
    """A lower-casing, whitespace-split `PreTrainedTokenizerFast` over `vocab` (no download)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ROLE_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE, "boi_token": BOI, "eoi_token": EOI},
        padding_side="left",
        model_max_length=model_max_length,
    )
