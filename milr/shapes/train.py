"""Train the `shapes` model from scratch: ``python -m milr.shapes.train --out DIR --seed 0``.

Six stages, all on rendered scenes of the shapes world, seeded and CPU-sized:
1. the VQ autoencoder (`JanusVQVAE` inside the Janus model) on random scenes, with a cosine
   codebook that matches how transformers decodes (unit-norm codebook entries);
2. the VQ decoder alone, on the renderer's codes (`refine_decoder`);
3. every training scene encoded once into 16 image tokens (one per grid cell);
4. the Llama text model with the generation embeddings, aligner and head, on two tasks:
   prompt → reasoning plan (text tokens) and prompt + plan → image tokens, with the prompt
   blanked to pad for a fraction of image samples (classifier-free guidance), exactly as the
   adapter forms the unconditional row;
4b. plan reading (``--plan-finetune-steps``, 400 by default; 0 skips it): stage 4 continued at a
   lower learning rate with extra image rows in which only the plan names the shape
   (`plan_only_items`), so that the image model draws the plan's shape when the prompt names
   none;
5. the knowledge facts of `milr.shapes.knowledge`, taught only partly (noisy targets) by
   training only the embedding rows of the words they add (`train_knowledge`).
One experimental option, off by default (at 0 the output is bitwise that of a run without it),
adds such plan-only rows inside stage 4 itself: ``--plan-only-rows N`` (not used for the shipped
weights: it broke the model's prompt reading; see the shapes docs).
The output directory is a transformers checkpoint plus processor, generation config and
``milr.json``; `milr/shapes/weights/` is this script's output with the default arguments.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from milr.shapes import world
from milr.shapes.recipe import (  # noqa: F401 - re-exported names
    BOI,
    BOS,
    CODEBOOK,
    EOI,
    EOS,
    HEADS,
    HIDDEN,
    IMAGE,
    LAYERS,
    PAD,
    PATCH,
    ROLE_TOKENS,
    SETTINGS,
    UNK,
    WORDS,
    janus_config,
    log,
    make_tokenizer,
    random_scene,
    to_tensor,
    vocabulary,
)
from milr.shapes.train_lm import (  # noqa: F401
    Sequences,
    make_dataset,
    train_knowledge,
    train_lm,
)
from milr.shapes.train_vq import (  # noqa: F401 - re-exported names
    cosine_lr,
    decode_tokens,
    encode_images,
    patch_codes,
    reconstruction_loss,
    refine_decoder,
    train_vq,
    vq_quantize,
)

# --- saving ---------------------------------------------------------------------------------


def save(model, out: Path, meta: dict[str, Any]) -> None:
    """Write checkpoint, processor, generation config, milr.json and the manifest."""
    from transformers import GenerationConfig, JanusImageProcessor, JanusProcessor

    from milr.shapes.model import write_manifest

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer()
    vocab = tokenizer.get_vocab()
    model.generation_config = GenerationConfig(
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[PAD],
        generation_kwargs={"boi_token_id": vocab[BOI]},
        guidance_scale=5.0,
        do_sample=True,
    )
    model.save_pretrained(out)
    image_processor = JanusImageProcessor(
        size={"height": world.IMAGE_SIZE, "width": world.IMAGE_SIZE}, min_size=14
    )
    processor = JanusProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=(world.IMAGE_SIZE // PATCH) ** 2,
    )
    processor.save_pretrained(out)
    (out / "milr.json").write_text(json.dumps(SETTINGS, indent=1) + "\n", encoding="utf-8")
    (out / "training.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    write_manifest(out)


def _sha256(checkpoint: Path) -> str:
    import hashlib

    return hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()


#: Rows of each kind per language-model step (`milr.shapes.train_lm.train_lm`'s batches).
_LM_BATCH = 24


def main(argv: list[str] | None = None) -> None:
    """Command line: train all stages and write the checkpoint directory."""
    import argparse

    import numpy as np
    import torch
    from transformers import JanusForConditionalGeneration

    parser = argparse.ArgumentParser(description="Train the milr `shapes` model (CPU, seeded).")
    parser.add_argument("--out", required=True, help="output checkpoint directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vq-steps", type=int, default=0, help="VQ steps on 32 px crops")
    parser.add_argument("--vq-full-steps", type=int, default=900, help="VQ steps on full scenes")
    parser.add_argument(
        "--decoder-steps", type=int, default=2500, help="decoder-only steps after the VQ"
    )
    parser.add_argument("--scenes", type=int, default=12000, help="training scenes for the LM")
    parser.add_argument("--lm-steps", type=int, default=1600)
    parser.add_argument(
        "--plan-only-rows",
        type=int,
        default=0,
        help="image rows per language-model step in which only the plan names the shape "
        "(a knowledge prompt with a plan of a random shape)",
    )
    parser.add_argument(
        "--plan-finetune-steps",
        type=int,
        default=400,
        help="stage 4b: after stage 4 (or --lm-from), continue the language model this many "
        "steps with --plan-finetune-rows plan-only image rows per step (0 skips it)",
    )
    parser.add_argument("--plan-finetune-rows", type=int, default=12)
    parser.add_argument("--plan-finetune-lr", type=float, default=5e-4)
    parser.add_argument("--plan-finetune-scenes", type=int, default=4000)
    parser.add_argument(
        "--knowledge-steps", type=int, default=300, help="steps teaching the knowledge facts"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (the result depends on it)"
    )
    parser.add_argument("--vq-from", default=None, help="reuse the VQ of an earlier output dir")
    parser.add_argument(
        "--lm-from",
        default=None,
        help="reuse stages 1-4 (VQ and language model) of an earlier output dir written before "
        "stages 4b and 5 existed, and run only stages 4b and 5",
    )
    args = parser.parse_args(argv)
    for name in (
        "vq_steps", "vq_full_steps", "decoder_steps", "lm_steps", "plan_only_rows",
        "plan_finetune_steps", "plan_finetune_rows", "knowledge_steps",
    ):  # fmt: skip
        if getattr(args, name) < 0:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} {getattr(args, name)} is negative; pass 0 or more")
    if args.threads < 1:
        parser.error(f"--threads {args.threads} must be at least 1")
    if not args.plan_finetune_lr > 0:
        parser.error(f"--plan-finetune-lr {args.plan_finetune_lr} must be positive")
    # each language-model step samples 24 image and 24 reasoning rows without replacement
    for flag, scenes, steps in (
        ("--scenes", args.scenes, 0 if args.lm_from else args.lm_steps),
        ("--plan-finetune-scenes", args.plan_finetune_scenes, args.plan_finetune_steps),
    ):
        if steps and scenes < _LM_BATCH:
            parser.error(f"{flag} {scenes} is fewer than one batch; pass at least {_LM_BATCH}")

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fh = (out / "train.log").open("w", encoding="utf-8")
    t_start = time.time()
    model = JanusForConditionalGeneration(janus_config())
    rng = random.Random(args.seed)
    if args.lm_from:
        from safetensors.torch import load_file

        state = load_file(str(Path(args.lm_from) / "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"lm_head.weight"}:  # the head is tied to the embeddings
            raise ValueError(f"{args.lm_from}: not a shapes checkpoint ({missing}, {unexpected})")
        model.eval()
        log(
            f"VQ and language model loaded (model.safetensors sha256 {_sha256(Path(args.lm_from))})",
            fh,
        )
    elif args.vq_from:
        from safetensors.torch import load_file

        state = load_file(str(Path(args.vq_from) / "model.safetensors"))
        vq_state = {
            k[len("model.vqmodel.") :]: v
            for k, v in state.items()
            if k.startswith("model.vqmodel.")
        }
        model.model.vqmodel.load_state_dict(vq_state)
        log(f"VQ loaded (model.safetensors sha256 {_sha256(Path(args.vq_from))})", fh)
    else:
        train_vq(model, rng, args.vq_steps, args.vq_full_steps, fh)
        refine_decoder(model, rng, args.decoder_steps, fh)
    t_vq = time.time() - t_start
    # the language-model stage has its own random streams, so `--vq-from` reproduces a full run
    if not args.lm_from:
        rng = random.Random(args.seed + 1)
        torch.manual_seed(args.seed + 1)
        data = make_dataset(model, args.scenes, rng, fh)
        train_lm(
            model,
            data,
            rng,
            args.lm_steps,
            fh,
            plan_only_rows=args.plan_only_rows,
            plan_only_seed=args.seed + 3,
        )
    if args.plan_finetune_steps:  # its own streams as well
        rng = random.Random(args.seed + 4)
        torch.manual_seed(args.seed + 4)
        data = make_dataset(model, args.plan_finetune_scenes, rng, fh)
        train_lm(
            model, data, rng, args.plan_finetune_steps, fh, lr=args.plan_finetune_lr,
            plan_only_rows=args.plan_finetune_rows, plan_only_seed=args.seed + 5,
        )  # fmt: skip
    # the knowledge stage has its own streams too: it starts from the stage-4 (or 4b) model
    # whatever their random draws were
    rng = random.Random(args.seed + 2)
    torch.manual_seed(args.seed + 2)
    train_knowledge(model, rng, args.knowledge_steps, fh)
    total = time.time() - t_start
    meta = {k: v for k, v in vars(args).items() if k not in ("out", "lm_from", "vq_from")}
    for key in ("vq_from", "lm_from"):  # what was reused, by content: no local path is recorded
        src = getattr(args, key)
        meta[key] = None if src is None else {"model.safetensors sha256": _sha256(Path(src))}
    meta.update(
        {"seconds_total": round(total, 1), "seconds_vq": round(t_vq, 1), "torch": torch.__version__}
    )
    fh.close()
    save(model, out, meta)
    log(f"done in {total / 60:.1f} min; wrote {out}")


if __name__ == "__main__":
    main()
