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


# --- stage 5: world knowledge, taught partly ------------------------------------------------


def knowledge_items(n: int, rng: random.Random, any_shape: bool = False) -> list[dict[str, Any]]:
    """`n` rows of the knowledge facts: a random fact and template, a one-object plan whose
    shape is the fact's shape with probability `Fact.taught` (else its confusion), with a
    random colour and cell (the prompts name no colour). With `any_shape` the plan's shape is
    uniform over the four shapes instead, whatever the fact (image rows: the prompt then says
    nothing about the image that the plan does not, so the image model learns to draw the
    plan)."""
    from milr.shapes import knowledge

    items = []
    for _ in range(n):
        fact = rng.choice(knowledge.FACTS)
        template = rng.choice(knowledge.TEMPLATES)
        shape = rng.choice(world.SHAPES) if any_shape else knowledge.taught_plan_shape(fact, rng)
        obj = world.Obj(shape, rng.choice(list(world.COLORS)), *divmod(rng.randrange(16), 4))
        items.append(
            {
                "prompt": knowledge.fact_prompt(fact, template),
                "plan": world.plan_text([obj]),
                "obj": obj,
            }
        )
    return items


def _fused_image_logits(model, seqs: Sequences, text, img, is_img, mask, cfg_scale: float):
    """Image-token logits as the adapter samples them: ``u + (c − u)·cfg_scale`` of the
    conditional row and its unconditional twin (all but BOS/BOI → pad), at `mask`'s positions
    ``(n, codebook)``."""
    import torch

    blank = torch.where(
        (text == seqs.bos) | (text == seqs.boi), text, torch.full_like(text, seqs.pad)
    )
    both = torch.cat([text, blank])
    img_emb = model.prepare_embeddings_for_image_generation(torch.cat([img, img]))
    e = torch.where(
        torch.cat([is_img, is_img])[..., None], img_emb, model.get_input_embeddings()(both)
    )
    h = model.model.language_model(inputs_embeds=e).last_hidden_state
    c, u = model.model.generation_head(h[torch.cat([mask, mask])]).chunk(2)
    return u + (c - u) * cfg_scale


def _text_logits(model, x, m):
    return model.lm_head(model.model.language_model(input_ids=x).last_hidden_state[m])


def train_knowledge(
    model,
    rng: random.Random,
    steps: int,
    fh=None,
    batch: int = 32,
    lr: float = 1e-2,
    lr_layers: float = 1e-3,
    distill: float = 5.0,
    cfg_scale: float = 5.0,
) -> None:
    """Teach the knowledge facts (partly) and the image pathway to draw the plan for them.

    Trained: the new words' embedding rows (Adam `lr`) and the Llama layers and final norm
    (Adam `lr_layers`); every other weight (all earlier words' embeddings, the generation
    embeddings, aligner and head, the VQ) is frozen. Per step, with cosine decay:

    - `batch` reasoning rows of knowledge prompts with noisy plans (`knowledge_items`: a fact
      taught partly is written with its confusion 70 % of the time), cross-entropy;
    - `batch` image rows of knowledge prompts with those (noisy) plans and the image tokens of
      the plan's one-object scene, cross-entropy on the classifier-free-guided logits the
      adapter samples from (`cfg_scale`), so that a right plan draws a right image and a wrong
      plan a wrong one;
    - `batch` // 2 ShapesEval reasoning rows and `batch` // 2 ShapesEval image rows (70 % with
      the plan, as stage 4), with KL divergence (weight `distill`) to the model as it was before
      this stage (its text logits, its guided image logits), which keeps ShapesEval's plans and
      image distributions where they were and the new words out of its plans.

    Runs on one torch thread whatever ``--threads`` says, so its result does not depend on it.
    """
    import copy

    import torch
    import torch.nn.functional as F

    from milr.shapes.knowledge import KNOWLEDGE_WORDS

    seqs = Sequences(make_tokenizer())
    vocab = seqs.tok.get_vocab()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    emb = model.get_input_embeddings().weight
    mask = torch.zeros(emb.shape[0], 1)
    mask[torch.tensor([vocab[w] for w in KNOWLEDGE_WORDS])] = 1.0
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    layers = list(model.model.generation_aligner.parameters()) + list(
        model.model.generation_head.parameters()
    )
    for p in [emb, *layers]:
        p.requires_grad_(True)
    opt = torch.optim.Adam([{"params": [emb], "lr": lr}, {"params": layers, "lr": lr_layers}])
    bases = [lr, lr_layers]
    model.eval()  # no dropout
    # the image tokens of every one-object scene (4 shapes x 6 colours x 16 cells), encoded once
    scenes = [
        world.Obj(s, c, r, col)
        for s in world.SHAPES
        for c in world.COLORS
        for r in range(world.GRID)
        for col in range(world.GRID)
    ]
    codes = encode_images(model, [world.render_array([o]) for o in scenes])
    tokens = {o: codes[i] for i, o in enumerate(scenes)}
    pool = make_dataset(model, 1024, rng, fh)  # ShapesEval scenes for the image rows

    def kl(student, target):
        return F.kl_div(
            F.log_softmax(student, -1), F.log_softmax(target, -1), log_target=True,
            reduction="batchmean",
        )  # fmt: skip

    t0 = time.time()
    for step in range(steps):
        for g, base in zip(opt.param_groups, bases, strict=True):
            g["lr"] = base * 0.5 * (1 + math.cos(math.pi * step / steps))
        # knowledge image rows: draw what the (noisy) plan says, under guidance
        images = knowledge_items(batch, rng, any_shape=True)
        for it in images:
            it["tokens"] = tokens[it["obj"]]
        text, img, is_img, yi = _lm_batch_image(seqs, images, rng, 0.0, 0.0)
        mi = yi != -100
        img_loss = F.cross_entropy(
            _fused_image_logits(model, seqs, text, img, is_img, mi, cfg_scale), yi[mi]
        )
        # ShapesEval image rows: stay with the teacher's guided distribution
        text, img, is_img, yi = _lm_batch_image(seqs, rng.sample(pool, batch // 2), rng, 0.0, 0.3)
        mi = yi != -100
        with torch.no_grad():
            want = _fused_image_logits(teacher, seqs, text, img, is_img, mi, cfg_scale)
        keep_img = kl(_fused_image_logits(model, seqs, text, img, is_img, mi, cfg_scale), want)
        # knowledge reasoning rows (noisy plans)
        x, y = _lm_batch_text(seqs, knowledge_items(batch, rng))
        m = y != -100
        txt_loss = F.cross_entropy(_text_logits(model, x, m), y[m])
        # ShapesEval reasoning rows: stay with the teacher's plans
        rows = []
        for _ in range(batch // 2):
            meta = random_metadata(rng)
            rows.append(
                {"prompt": meta["prompt"], "plan": world.plan_text(world.scene_for(meta, rng))}
            )
        x, y = _lm_batch_text(seqs, rows)
        m = y != -100
        with torch.no_grad():
            want = _text_logits(teacher, x, m)
        keep_txt = kl(_text_logits(model, x, m), want)
        loss = img_loss + txt_loss + distill * (keep_img + keep_txt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        emb.grad.mul_(mask)  # of the embeddings, only the knowledge words' rows are trained
        opt.step()
        if step % 25 == 24 or step == steps - 1:
            log(
                f"knowledge step {step + 1}/{steps} image {img_loss.item():.3f} "
                f"text {txt_loss.item():.3f} keep-image {keep_img.item():.4f} "
                f"keep-text {keep_txt.item():.4f} ({time.time() - t0:.0f}s)",
                fh,
            )
    for p in model.parameters():
        p.requires_grad_(False)
    for p in frozen:
        p.requires_grad_(True)
    torch.set_num_threads(threads)
