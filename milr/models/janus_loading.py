"""Loading a Janus checkpoint with every load-time failure as one line, before expensive work.

Order (cheapest first): the processor and tokenizer (a tokenizer config without the
``extra_special_tokens`` Janus needs; a tokenizer that does not round-trip text), then the
weight files checked whole (`milr.weight_files`: truncated, damaged, empty, partial), then the
weights, straight to the target device, refused when tensors are missing or unexpected
(`milr.checkpoints`). On a CPU the VQ decoder runs in float32 whatever the model dtype: bf16
convolutions are ~18× slower there (a 384 px decode in bf16 did not finish in 27 minutes).
"""

from __future__ import annotations

from typing import Any

from milr.checkpoints import check_loading_info, first_line, quiet_transformers
from milr.errors import CheckpointError

#: The special tokens `JanusProcessor` reads from the tokenizer, with Janus-Pro's spellings.
JANUS_SPECIAL_TOKENS = {
    "image_token": "<image_placeholder>",
    "boi_token": "<begin_of_image>",
    "eoi_token": "<end_of_image>",
}
#: Text of the tokenizer round-trip check: spaces, punctuation and a newline.
ROUND_TRIP_TEXT = "a photo of a cat.\nthe dog is on the left"


def load_processor(source: str) -> Any:
    """`JanusProcessor.from_pretrained(source)`; a missing file or special token is one line."""
    from transformers import JanusProcessor

    try:
        with quiet_transformers():
            return JanusProcessor.from_pretrained(source)
    except AttributeError as exc:
        # JanusProcessor reads tokenizer.image_token / boi_token / eoi_token: absent when the
        # tokenizer config has no `extra_special_tokens` (an older or hand-made export).
        example = ", ".join(f'"{k}": "{v}"' for k, v in JANUS_SPECIAL_TOKENS.items())
        raise CheckpointError(
            f"checkpoint {source!r}: the tokenizer has no Janus special tokens "
            f"({first_line(exc)}); add to its tokenizer_config.json "
            f'"extra_special_tokens": {{{example}}}'
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"cannot load the processor of Janus checkpoint {source!r}: {first_line(exc)}"
        ) from None


def check_round_trip(tokenizer: Any, source: str) -> None:
    """Refuse a tokenizer that does not give back the text it encoded (see below).

    Some transformers 5.x releases load the Janus-Pro byte-level tokenizer through a Metaspace
    pre-tokenizer (transformers issues #45488, #48206) and silently mangle every prompt
    (``a photo of a cat`` → ``aph oto of ac at``). Word-level tokenizers (the tiny test model,
    ``shapes``) lower-case and split on whitespace, so whitespace and case are compared loosely
    for them; a text with unknown words is not a fair test and is skipped.
    """
    import transformers

    ids = tokenizer(ROUND_TRIP_TEXT, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in ids:
        return  # a vocabulary-limited tokenizer: the check text has words it cannot spell
    back = tokenizer.decode(ids, skip_special_tokens=True)
    if back == ROUND_TRIP_TEXT or " ".join(back.lower().split()) == " ".join(
        ROUND_TRIP_TEXT.lower().split()
    ):
        return
    raise CheckpointError(
        f"checkpoint {source!r}: its tokenizer does not round-trip text under transformers "
        f"{transformers.__version__} ({ROUND_TRIP_TEXT!r} -> {back!r}); this release mangles "
        "every prompt: install another transformers version (see docs/method.md)"
    )


def load_model(source: str, device: str, dtype: Any, allow_missing: bool) -> Any:
    """The `JanusForConditionalGeneration` on `device` in `dtype`, checked for missing tensors."""
    import importlib.util

    import torch
    from transformers import JanusForConditionalGeneration

    # Straight to an accelerator with `device_map` (transformers needs `accelerate` for it, a
    # dependency of milr); on the CPU, or where accelerate is missing, load then move.
    from milr.weight_files import check_weights_path

    check_weights_path(source, "model")  # a damaged weight file: one line, before loading
    direct = device != "cpu" and importlib.util.find_spec("accelerate") is not None
    placement: dict[str, Any] = {"device_map": {"": torch.device(device)}} if direct else {}
    try:
        with quiet_transformers():
            loaded: Any = JanusForConditionalGeneration.from_pretrained(
                source, dtype=dtype, output_loading_info=True, **placement
            )
            model, info = loaded
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(
            f"cannot load Janus checkpoint {source!r}: {first_line(exc)}"
        ) from None
    check_loading_info(info, source, "generator", allow_missing)
    if not direct and device != "cpu":
        model.to(device)
    if not str(device).startswith("cuda") and dtype in (torch.bfloat16, torch.float16):
        model.model.vqmodel.to(torch.float32)  # see the module docstring
    return model
