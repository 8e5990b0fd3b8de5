"""Stages 3-4 of `shapes` training: encode the training scenes into image tokens, then train
the Llama text model with the generation embeddings, aligner and head on prompt → plan and
prompt + plan → image tokens (with classifier-free-guidance dropout)."""

from __future__ import annotations

import math
import random
import time
from typing import Any

from milr.shapes import world
from milr.shapes.evalset import random_metadata
from milr.shapes.recipe import BOI, BOS, EOS, PAD, PATCH, SETTINGS, log, make_tokenizer
from milr.shapes.train_vq import encode_images

# --- stage 3: language model ----------------------------------------------------------------


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


def image_logits(model, lm, text, img, is_img, y):
    """Generation-head logits ``[P, codebook]`` at the P trained positions (``y != -100``) of one
    `_lm_batch_image` batch: text embeddings at the text positions, image embeddings at the
    image ones, through the language model `lm`."""
    import torch

    emb = torch.where(
        is_img[..., None],
        model.prepare_embeddings_for_image_generation(img),
        model.get_input_embeddings()(text),
    )
    h = lm(inputs_embeds=emb).last_hidden_state
    return model.model.generation_head(h[y != -100])


def _image_loss(model, lm, text, img, is_img, y):
    """Cross-entropy of the generation head on the image positions of one `_lm_batch_image`
    batch (`image_logits` against the batch's targets)."""
    import torch.nn.functional as F

    return F.cross_entropy(image_logits(model, lm, text, img, is_img, y), y[y != -100])


def one_object_scenes() -> list[world.Obj]:
    """Every one-object scene: 4 shapes × 6 colours × 16 cells, in that nesting order."""
    return [
        world.Obj(s, c, r, col)
        for s in world.SHAPES
        for c in world.COLORS
        for r in range(world.GRID)
        for col in range(world.GRID)
    ]


def one_object_tokens(model) -> dict[world.Obj, Any]:
    """The 16 image tokens of every one-object scene (`one_object_scenes`), encoded once with
    the model's VQ: `Obj` → int64 tensor ``(16,)``."""
    scenes = one_object_scenes()
    codes = encode_images(model, [world.render_array([o]) for o in scenes])
    return {o: codes[i] for i, o in enumerate(scenes)}


def plan_only_items(n: int, rng: random.Random, tokens: dict) -> list[dict[str, Any]]:
    """`n` image rows in which only the plan names the shape: a knowledge prompt of a random
    fact and frame ("a photo of a shape like a wheel") with a one-object plan of a random
    shape, colour and cell drawn independently of the fact, and that plan's image tokens.

    The prompt carries no usable shape, so the image model learns to take the shape from the
    plan (stage 4's other image rows pair every plan with a prompt naming the same shapes,
    which lets the network ignore the plan's shape word)."""
    from milr.shapes import knowledge

    items = []
    for _ in range(n):
        fact = rng.choice(knowledge.FACTS)
        template = rng.choice(knowledge.TEMPLATES)
        obj = world.Obj(
            rng.choice(world.SHAPES), rng.choice(list(world.COLORS)), *divmod(rng.randrange(16), 4)
        )
        items.append(
            {
                "prompt": knowledge.fact_prompt(fact, template),
                "plan": world.plan_text([obj]),
                "tokens": tokens[obj],
            }
        )
    return items


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
    plan_only_rows: int = 0,
    plan_only_seed: int = 0,
) -> None:
    """Train the text model, generation embeddings/aligner/head on reasoning and image rows.

    ``plan_only_rows`` > 0 adds that many image rows per step in which only the plan names the
    shape (`plan_only_items`), drawn from their own stream ``random.Random(plan_only_seed)``,
    so that the other rows' draws are those of a run without them. At 0 (the default) the
    stage is exactly the one without this option.
    """
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
    tokens1, rng_po = {}, random.Random(plan_only_seed)
    if plan_only_rows:
        tokens1 = one_object_tokens(model)
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
        img_loss = _image_loss(model, lm, text, img, is_img, y)
        if plan_only_rows:  # the same loss, on their own batch (their rows are shorter)
            po = plan_only_items(plan_only_rows, rng_po, tokens1)
            text, img, is_img, y = _lm_batch_image(seqs, po, rng_po, 0.0, 0.0)
            po_loss = _image_loss(model, lm, text, img, is_img, y)
            img_loss = (batch_img * img_loss + plan_only_rows * po_loss) / (
                batch_img + plan_only_rows
            )
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


# --- stage 5: world knowledge, taught partly ------------------------------------------------


def knowledge_items(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """`n` reasoning rows of the knowledge facts: a random fact and template, a one-object plan
    whose shape is the fact's shape with probability `Fact.taught` (else its confusion), with a
    random colour and cell (the prompts name no colour)."""
    from milr.shapes import knowledge

    items = []
    for _ in range(n):
        fact = rng.choice(knowledge.FACTS)
        template = rng.choice(knowledge.TEMPLATES)
        shape = knowledge.taught_plan_shape(fact, rng)
        obj = world.Obj(shape, rng.choice(list(world.COLORS)), *divmod(rng.randrange(16), 4))
        items.append(
            {
                "prompt": knowledge.fact_prompt(fact, template),
                "plan": world.plan_text([obj]),
                "obj": obj,
            }
        )
    return items


def train_knowledge(
    model, rng: random.Random, steps: int, fh=None, batch: int = 32, lr: float = 1e-2
) -> None:
    """Teach the knowledge facts by training only the new words' embedding rows.

    Everything else is frozen, so a prompt without a knowledge word runs the same network as
    before this stage; the rows are tied to the text head, so the only other change is the
    (already tiny) probability of writing a knowledge word in a plan. Targets are noisy
    (`knowledge_items`): a fact taught partly is written with its confusion 70 % of the time.
    Each step also trains `batch` // 2 image rows of knowledge prompts with their plan (the
    image tokens of the plan's one-object scene), so that the image model keeps drawing what
    the plan says when the prompt holds the new words.
    Runs on one torch thread whatever ``--threads`` says, so its result does not depend on it.
    """
    import torch
    import torch.nn.functional as F

    from milr.shapes.knowledge import KNOWLEDGE_WORDS

    seqs = Sequences(make_tokenizer())
    vocab = seqs.tok.get_vocab()
    emb = model.get_input_embeddings().weight
    mask = torch.zeros(emb.shape[0], 1)
    mask[torch.tensor([vocab[w] for w in KNOWLEDGE_WORDS])] = 1.0
    lm = model.model.language_model
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    emb.requires_grad_(True)
    opt = torch.optim.Adam([emb], lr=lr)
    model.eval()  # no dropout; only the embedding rows move
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tokens = one_object_tokens(model)  # every one-object scene's image tokens, encoded once
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        images = knowledge_items(batch // 2, rng)
        for it in images:
            it["tokens"] = tokens[it["obj"]]
        text, img, is_img, yi = _lm_batch_image(seqs, images, rng, 0.0, 0.0)
        img_loss = _image_loss(model, lm, text, img, is_img, yi)
        rows = knowledge_items(batch, rng)
        for _ in range(batch // 2):  # ShapesEval plans keep the new words out of every plan
            meta = random_metadata(rng)
            rows.append(
                {"prompt": meta["prompt"], "plan": world.plan_text(world.scene_for(meta, rng))}
            )
        x, y = _lm_batch_text(seqs, rows)
        h = lm(input_ids=x).last_hidden_state
        m = y != -100
        txt_loss = F.cross_entropy(model.lm_head(h[m]), y[m])
        opt.zero_grad(set_to_none=True)
        (txt_loss + img_loss).backward()
        emb.grad.mul_(mask)  # only the knowledge words' rows are trained
        opt.step()
        if step % 50 == 49 or step == steps - 1:
            log(
                f"knowledge step {step + 1}/{steps} image {img_loss.item():.3f} "
                f"text {txt_loss.item():.3f} ({time.time() - t0:.0f}s)",
                fh,
            )
    for p in frozen:
        p.requires_grad_(True)
    torch.set_num_threads(threads)
