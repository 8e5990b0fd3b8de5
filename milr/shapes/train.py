"""Train the `shapes` model from scratch: ``python -m milr.shapes.train --out DIR --seed 0``.

Four stages, all on rendered scenes of the shapes world, seeded and CPU-sized:
1. the VQ autoencoder (`JanusVQVAE` inside the Janus model) on random scenes, with a cosine
   codebook that matches how transformers decodes (unit-norm codebook entries);
2. the VQ decoder alone, on the renderer's codes (`refine_decoder`);
3. every training scene encoded once into 16 image tokens (one per grid cell);
4. the Llama text model with the generation embeddings, aligner and head, on two tasks:
   prompt → reasoning plan (text tokens) and prompt + plan → image tokens, with the prompt
   blanked to pad for a fraction of image samples (classifier-free guidance), exactly as the
   adapter forms the unconditional row.
The output directory is a transformers checkpoint plus processor, generation config and
``milr.json``; `milr/shapes/weights/` is this script's output with the default arguments.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
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
from milr.shapes.evalset import random_metadata

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


# --- stage 1: VQ ----------------------------------------------------------------------------


def vq_quantize(model, x):
    """Encode pixels to unit-norm latents and their nearest unit-norm codebook entries."""
    import torch
    import torch.nn.functional as F

    vq = model.model.vqmodel
    z = F.normalize(vq.quant_conv(vq.encoder(x)), dim=1)  # (B, D, h, w)
    codebook = F.normalize(vq.quantize.embedding.weight, dim=1)
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    idx = torch.argmax(flat @ codebook.t(), dim=1)
    q = codebook[idx].view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
    return z, q, idx


def patch_codes(objects: list[world.Obj]):
    """The renderer's code for each `PATCH`-px patch of a scene, as a ``(side, side)`` grid.

    With 16 px patches a patch is one grid cell: 0 is an empty cell and ``1 + shape·6 +
    colour`` a cell holding that object (4 shapes × 6 colours = 24 codes); with smaller
    patches each quadrant of an object gets its own code. Grid-aligned scenes consist of
    exactly these patches, so this is the ideal codebook use the VQ is trained towards.
    """
    import torch

    side = world.IMAGE_SIZE // PATCH
    per_cell = world.CELL // PATCH
    shapes, colors = list(world.SHAPES), list(world.COLORS)
    grid = torch.zeros(side, side, dtype=torch.long)
    for o in objects:
        k = shapes.index(o.shape) * len(colors) + colors.index(o.color)
        for qy in range(per_cell):
            for qx in range(per_cell):
                grid[o.row * per_cell + qy, o.col * per_cell + qx] = (
                    1 + k * per_cell**2 + qy * per_cell + qx
                )
    return grid


def cosine_lr(step: int, total: int, peak: float = 2e-3) -> float:
    """Cosine decay from `peak` to a tenth of it over `total` steps (the VQ and decoder stages)."""
    return peak * (0.5 * (1 + math.cos(math.pi * step / total)) * 0.9 + 0.1)


def reconstruction_loss(y, x):
    """Pixel loss of decoded `y` against scene `x`: MSE + ½ L1, object pixels and edges ×10."""
    import torch.nn.functional as F

    fg = (x < 0.9).any(1, keepdim=True).float()
    w = 1.0 + 9.0 * F.max_pool2d(fg, 3, 1, 1)  # objects and their edges
    return ((y - x) ** 2 * w).mean() + 0.5 * ((y - x).abs() * w).mean()


def train_vq(model, rng: random.Random, steps: int, full_steps: int, fh=None) -> None:
    """Train encoder, codebook and decoder on rendered scenes, with renderer-supervised codes.

    The decoder learns to draw each scene from the unit-norm codebook entries of its patch
    codes (`patch_codes`); the encoder learns to pick those codes (cross-entropy on cosine
    similarity to the codebook, which is exactly transformers' nearest-code lookup for a
    unit-norm codebook). The first `steps` steps use 32 px crops (4× cheaper), the last
    `full_steps` whole scenes; object pixels weigh 10× background pixels. With one 16 px code
    per cell the default is whole scenes only: crops shrink the encoder's 4×4 bottleneck to
    2×2, and a VQ trained mostly on crops stalled at 0.94 code accuracy on whole scenes (it
    reaches 1.00 within 400 whole-scene steps).
    """
    import torch
    import torch.nn.functional as F

    vq = model.model.vqmodel
    vq.train()
    opt = torch.optim.Adam(vq.parameters(), lr=2e-3)
    t0 = time.time()
    total = steps + full_steps
    for step in range(total):
        full = step >= steps
        batch = 16 if full else 32
        arrays, codes = [], []
        for _ in range(batch):
            objs = random_scene(rng, max_objects=6)
            arr, code = world.render_array(objs), patch_codes(objs)
            if not full:
                oy, ox = rng.choice([0, 16, 32]), rng.choice([0, 16, 32])
                arr = arr[oy : oy + 32, ox : ox + 32]
                code = code[oy // PATCH : (oy + 32) // PATCH, ox // PATCH : (ox + 32) // PATCH]
            arrays.append(arr)
            codes.append(code)
        x = to_tensor(arrays)
        ids = torch.stack(codes)  # (B, h, w)
        lr = cosine_lr(step, total)
        for g in opt.param_groups:
            g["lr"] = lr
        codebook = F.normalize(vq.quantize.embedding.weight, dim=1)
        z = F.normalize(vq.quant_conv(vq.encoder(x)), dim=1)
        logits = torch.einsum("bdhw,kd->bkhw", z, codebook) / 0.1
        ce = F.cross_entropy(logits, ids)
        acc = (logits.argmax(1) == ids).float().mean()
        q = codebook[ids].permute(0, 3, 1, 2)
        y = vq.decoder(vq.post_quant_conv(q))
        rec = reconstruction_loss(y, x)
        loss = rec + ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 49 or step == total - 1:
            log(
                f"vq step {step + 1}/{total} rec {rec.item():.4f} code-ce {ce.item():.4f} "
                f"code-acc {acc.item():.4f} lr {lr:.5f} ({time.time() - t0:.0f}s)",
                fh,
            )
    with torch.no_grad():  # store unit-norm codes: transformers' encode then equals cosine lookup
        vq.quantize.embedding.weight.copy_(F.normalize(vq.quantize.embedding.weight, dim=1))
    vq.eval()
    scenes = [random_scene(rng, max_objects=4) for _ in range(512)]
    idx = encode_images(model, [world.render_array(s) for s in scenes])
    cells = (idx == torch.stack([patch_codes(s).view(-1) for s in scenes])).float()
    scene_ok = cells.all(1).float().mean()
    log(
        f"vq held-out: code accuracy {cells.mean().item():.4f}, scenes with every code right "
        f"{scene_ok.item():.4f} (512 fresh scenes)",
        fh,
    )


def refine_decoder(model, rng: random.Random, steps: int, fh=None, batch: int = 16) -> None:
    """Train only the VQ decoder (and ``post_quant_conv``) on the renderer's codes.

    Stage 1 gets the encoder to every code quickly, but the decoder must draw each 16 px cell
    from a single code vector: the cell's inner geometry (a triangle's slopes, a square's
    corners) has to be inferred from neighbouring cells and the image border, which takes far
    longer than the code assignment. Without the encoder in the loop a step costs about half.
    """
    import torch
    import torch.nn.functional as F

    vq = model.model.vqmodel
    vq.train()
    params = list(vq.decoder.parameters()) + list(vq.post_quant_conv.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    codebook = F.normalize(vq.quantize.embedding.weight, dim=1).detach()
    t0 = time.time()
    for step in range(steps):
        lr = cosine_lr(step, steps)
        for g in opt.param_groups:
            g["lr"] = lr
        scenes = [random_scene(rng, max_objects=6) for _ in range(batch)]
        x = to_tensor([world.render_array(s) for s in scenes])
        q = codebook[torch.stack([patch_codes(s) for s in scenes])].permute(0, 3, 1, 2)
        y = vq.decoder(vq.post_quant_conv(q))
        rec = reconstruction_loss(y, x)
        opt.zero_grad(set_to_none=True)
        rec.backward()
        opt.step()
        if step % 50 == 49 or step == steps - 1:
            log(f"decoder step {step + 1}/{steps} rec {rec.item():.4f} lr {lr:.5f} "
                f"({time.time() - t0:.0f}s)", fh)  # fmt: skip
    vq.eval()


def encode_images(model, arrays, batch: int = 64):
    """Image tokens ``(N, 16)`` of uint8 scenes, with the trained VQ."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(arrays), batch):
            _, _, idx = vq_quantize(model, to_tensor(arrays[i : i + batch]))
            out.append(idx.view(-1, (world.IMAGE_SIZE // PATCH) ** 2))
    return torch.cat(out)


def decode_tokens(model, tokens):
    """uint8 arrays ``(N, 64, 64, 3)`` of image tokens, via transformers' decode path."""
    import torch

    with torch.no_grad():
        px = model.model.vqmodel.decode(tokens)
    return ((px.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# --- stage 3: language model ----------------------------------------------------------------

#: Prompt formats written to ``milr.json`` (see the adapter's janus.py for how they are used).
SETTINGS: dict[str, Any] = {
    "comment": "prompt formats of the shapes model; written by milr.shapes.train",
    "reasoning_template": "<|User|>: {instruction}\n\n<|Assistant|>:",
    "reasoning_instruction": "write a short plan of {prompt}",
    "image_template": "<|User|>: {text}\n\n<|Assistant|>:",
    "image_text_template": "{prompt}. {reasoning}",
    "uncond": "pad",
    "max_reasoning_tokens": 40,
    "add_bos": True,
}


class Sequences:
    """Token rows for the two training tasks, formed exactly as the Janus adapter forms them."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        vocab = tokenizer.get_vocab()
        self.bos, self.eos, self.pad, self.boi = vocab[BOS], vocab[EOS], vocab[PAD], vocab[BOI]

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def reasoning(self, prompt: str, plan: str) -> tuple[list[int], list[int]]:
        """(prompt ids, target ids): the plan follows the reasoning prompt and ends with EOS."""
        instr = SETTINGS["reasoning_instruction"].format(prompt=prompt)
        ids = [self.bos] + self.encode(
            SETTINGS["reasoning_template"].format(instruction=instr, prompt=prompt)
        )
        return ids, self.encode(plan) + [self.eos]

    def image_prompt(self, prompt: str, plan: str | None, uncond: bool) -> list[int]:
        """Conditional (or unconditional: all but BOS/BOI → PAD) image prompt ending with BOI."""
        text = (
            prompt
            if plan is None
            else SETTINGS["image_text_template"].format(prompt=prompt, reasoning=plan)
        )
        ids = [self.bos] + self.encode(SETTINGS["image_template"].format(text=text)) + [self.boi]
        if uncond:
            ids = [t if t in (self.bos, self.boi) else self.pad for t in ids]
        return ids


def make_dataset(model, n: int, rng: random.Random, fh=None) -> list[dict[str, Any]]:
    """`n` prompt/scene pairs (tags uniform) with plan text and VQ image tokens."""
    items = []
    for _ in range(n):
        meta = random_metadata(rng)
        objs = world.scene_for(meta, rng)
        items.append({"prompt": meta["prompt"], "plan": world.plan_text(objs), "objs": objs})
    t0 = time.time()
    tokens = encode_images(model, [world.render_array(it["objs"]) for it in items])
    for it, tk in zip(items, tokens, strict=True):
        it["tokens"] = tk
    log(f"encoded {n} scenes in {time.time() - t0:.0f}s", fh)
    return items


def _lm_batch_text(seqs: Sequences, items, device="cpu"):
    import torch

    rows, targets = [], []
    for it in items:
        ids, tgt = seqs.reasoning(it["prompt"], it["plan"])
        full = ids + tgt
        rows.append(full)
        # position p predicts full[p + 1]; only plan tokens (and EOS) are trained
        targets.append([-100] * (len(ids) - 1) + tgt + [-100])
    width = max(len(r) for r in rows)
    x = torch.full((len(rows), width), seqs.pad, dtype=torch.long)
    y = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, targets, strict=True)):
        x[i, : len(r)] = torch.tensor(r)
        y[i, : len(t)] = torch.tensor(t)
    return x, y


def _lm_batch_image(seqs: Sequences, items, rng: random.Random, p_uncond: float, p_noplan: float):
    import torch

    n_img = (world.IMAGE_SIZE // PATCH) ** 2
    prompts = []
    for it in items:
        u = rng.random()
        if u < p_uncond:
            prompts.append(
                seqs.image_prompt(it["prompt"], it["plan"] if rng.random() < 0.5 else None, True)
            )
        elif u < p_uncond + p_noplan:
            prompts.append(seqs.image_prompt(it["prompt"], None, False))
        else:
            prompts.append(seqs.image_prompt(it["prompt"], it["plan"], False))
    width = max(len(p) for p in prompts) + n_img
    text = torch.full((len(items), width), seqs.pad, dtype=torch.long)
    img = torch.zeros((len(items), width), dtype=torch.long)
    is_img = torch.zeros((len(items), width), dtype=torch.bool)
    y = torch.full((len(items), width), -100, dtype=torch.long)
    for i, (p, it) in enumerate(zip(prompts, items, strict=True)):
        L = len(p)
        text[i, :L] = torch.tensor(p)
        img[i, L : L + n_img] = it["tokens"]
        is_img[i, L : L + n_img] = True
        y[i, L - 1 : L - 1 + n_img] = it["tokens"]  # BOI predicts token 0, token k predicts k+1
    return text, img, is_img, y


def train_lm(
    model,
    data,
    rng: random.Random,
    steps: int,
    fh=None,
    batch_img: int = 24,
    batch_txt: int = 24,
    lr: float = 2e-3,
    p_uncond: float = 0.15,
    p_noplan: float = 0.3,
) -> None:
    """Train the text model, generation embeddings/aligner/head on reasoning and image rows."""
    import torch
    import torch.nn.functional as F

    seqs = Sequences(make_tokenizer())
    lm = model.model.language_model
    params = (
        list(lm.parameters())
        + list(model.model.generation_embeddings.parameters())
        + list(model.model.generation_aligner.parameters())
        + list(model.model.generation_head.parameters())
    )
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    model.model.vqmodel.eval()
    t0 = time.time()
    warm = 50
    for step in range(steps):
        f = min(1.0, (step + 1) / warm) * (
            0.5 * (1 + math.cos(math.pi * step / steps)) * 0.95 + 0.05
        )
        for g in opt.param_groups:
            g["lr"] = lr * f
        # image rows
        items = rng.sample(data, batch_img)
        text, img, is_img, y = _lm_batch_image(seqs, items, rng, p_uncond, p_noplan)
        emb = torch.where(
            is_img[..., None],
            model.prepare_embeddings_for_image_generation(img),
            model.get_input_embeddings()(text),
        )
        h = lm(inputs_embeds=emb).last_hidden_state
        mask = y != -100
        img_loss = F.cross_entropy(model.model.generation_head(h[mask]), y[mask])
        # reasoning rows
        x, yt = _lm_batch_text(seqs, rng.sample(data, batch_txt))
        ht = lm(input_ids=x).last_hidden_state
        mt = yt != -100
        txt_loss = F.cross_entropy(model.lm_head(ht[mt]), yt[mt])
        loss = img_loss + txt_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 25 == 24 or step == steps - 1:
            log(
                f"lm step {step + 1}/{steps} image {img_loss.item():.3f} text {txt_loss.item():.3f} "
                f"lr {lr * f:.5f} ({time.time() - t0:.0f}s)",
                fh,
            )
    model.eval()


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
        "--threads", type=int, default=2, help="torch threads (the result depends on it)"
    )
    parser.add_argument("--vq-from", default=None, help="reuse the VQ of an earlier output dir")
    args = parser.parse_args(argv)

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
    if args.vq_from:
        from safetensors.torch import load_file

        state = load_file(str(Path(args.vq_from) / "model.safetensors"))
        vq_state = {
            k[len("model.vqmodel.") :]: v
            for k, v in state.items()
            if k.startswith("model.vqmodel.")
        }
        model.model.vqmodel.load_state_dict(vq_state)
        log(f"VQ loaded from {args.vq_from}", fh)
    else:
        train_vq(model, rng, args.vq_steps, args.vq_full_steps, fh)
        refine_decoder(model, rng, args.decoder_steps, fh)
    t_vq = time.time() - t_start
    # the language-model stage has its own random streams, so `--vq-from` reproduces a full run
    rng = random.Random(args.seed + 1)
    torch.manual_seed(args.seed + 1)
    data = make_dataset(model, args.scenes, rng, fh)
    train_lm(model, data, rng, args.lm_steps, fh)
    total = time.time() - t_start
    meta = {k: v for k, v in vars(args).items() if k != "out"}
    meta.update(
        {"seconds_total": round(total, 1), "seconds_vq": round(t_vq, 1), "torch": torch.__version__}
    )
    fh.close()
    save(model, out, meta)
    log(f"done in {total / 60:.1f} min; wrote {out}")


if __name__ == "__main__":
    main()
