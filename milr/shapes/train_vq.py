"""Stages 1-2 of `shapes` training: the VQ autoencoder, then the VQ decoder alone; and the
encode/decode helpers the language-model stage and the checks use."""

from __future__ import annotations

import math
import random
import time

from milr.shapes import world
from milr.shapes.recipe import PATCH, log, random_scene, to_tensor

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
