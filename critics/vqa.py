"""`vqa`: visual question answering yes-probabilities (BLIP-VQA, GIT) as the benchmarks use them.

Each question's score is ``P(yes) / (P(yes) + P(no))`` of the model's first answer token. Two
question sets, chosen by ``mode`` (``auto``: ``colors`` when the metadata has GenEval
``include`` clauses, else ``phrases``):

* ``phrases`` — T2I-CompBench's BLIP-VQA score (``BLIPvqa_eval/BLIP_vqa.py``): one question
  ``"<noun phrase>?"`` per noun phrase of the prompt (at most ``max_phrases``, 8 there), e.g.
  ``"a red backpack?"``, and the image's score is the **product** over its phrases. Phrases come
  from metadata ``phrases`` (a list of strings) when given, else from the prompt (``phrases=rule``
  or ``spacy``; T2I-CompBench uses spaCy ``en_core_web_sm`` noun chunks).
* ``colors`` — MixedReward's GIT colour check (the MILR authors' ``score_git.py``): one question
  per GenEval include clause ``(color, class, count)``: ``"Is this a {color} {class}?"``, or
  ``"Are there {count} {color} {class}s?"`` when the count is above one; the image's score is
  the **mean** over clauses (a clause without colour asks about the object alone).

BLIP (``BlipForQuestionAnswering``; T2I-CompBench runs BLIP's ``model_base_vqa_capfilt_large``,
``Salesforce/blip-vqa-capfilt-large`` in transformers, at ``image_size=480`` with interpolated
position embeddings): the question is encoded with the image, starting with
BLIP's ``[ENC]`` token as BLIP's own VQA model and T2I-CompBench do (``[CLS]`` when the
tokenizer has no ``[ENC]``; details say which), truncated to 35 tokens, and the answer decoder
reads one step from ``[DEC]``. GIT (``GitForCausalLM``): the input is ``[CLS]`` + question
tokens after the image, and the next-token distribution at the last question token is read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from milr import Critic, CriticParams, CriticResult, MilrUserError, hookimpl
from milr.critics import _hf
from milr.critics._images import to_rgb
from milr.params import BatchSize, Device, VerdictThreshold, dtype_param

if TYPE_CHECKING:
    from PIL.Image import Image

MODEL_TYPES = {"blip": "BlipForQuestionAnswering", "git": "GitForCausalLM"}
_HINT = (
    "pass weights=ID or DIR, a Hub id or a local transformers checkpoint of BLIP VQA (e.g. "
    "Salesforce/blip-vqa-capfilt-large, T2I-CompBench's evaluator) or GIT VQA (e.g. "
    "microsoft/git-large-vqav2, MixedReward's)"
)
#: T2I-CompBench truncates BLIP questions to this many tokens.
MAX_QUESTION_TOKENS = 35


def color_questions(metadata: dict[str, Any]) -> list[str]:
    """MixedReward's questions for GenEval include clauses (module docstring)."""
    out = []
    for clause in metadata.get("include", []):
        color = str(clause.get("color", "") or "")
        cls = str(clause.get("class", ""))
        count = clause.get("count", 1)
        words = f"{color} {cls}".strip()
        if isinstance(count, int) and count > 1:
            out.append(f"Are there {count} {words}s?")
        else:
            out.append(f"Is this a {words}?")
    return out


class VQACritic(Critic):
    """Yes-probability of VQA questions about the prompt's phrases or GenEval colour clauses.

    Score in [0, 1]: product (``phrases``) or mean (``colors``) of the per-question scores;
    verdict ``score >= threshold`` (none when ``threshold`` is null). Details: ``mode``,
    ``aggregate``, ``model_type``, ``questions`` (question, ``p_yes``, ``p_no``, ``score``) and,
    for BLIP, ``question_start`` (``[ENC]`` or ``[CLS]``).
    """

    name: ClassVar[str] = "vqa"
    description: ClassVar[str] = (
        "VQA yes-probability: BLIP-VQA (T2I-CompBench) or GIT colour check (MixedReward)"
    )
    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt", "include", "phrases")

    class Params(CriticParams):
        weights: str = Field(
            description="BLIP VQA or GIT Hub id (downloaded on first use) or checkpoint directory"
        )
        revision: str | None = Field(
            None,
            description="Hub revision (branch, tag or commit) when weights is a Hub id; None: the default branch",
        )
        mode: Literal["auto", "phrases", "colors"] = Field(
            "auto", description="questions: prompt noun phrases, GenEval colour clauses, or auto"
        )
        aggregate: Literal["auto", "product", "mean"] = Field(
            "auto",
            description="combine question scores; auto: product for phrases, mean for colors",
        )
        max_phrases: int = Field(
            8, ge=1, description="questions per image in phrases mode (T2I-CompBench np_num 8)"
        )
        phrases: Literal["rule", "spacy"] = Field(
            "rule", description="noun-phrase extractor for prompts: rule or spacy"
        )
        spacy_model: str = Field(
            "en_core_web_sm",
            description="installed spaCy pipeline (name or path) for phrases=spacy",
        )
        enc_token: bool = Field(
            True, description="BLIP: start questions with [ENC] as BLIP/T2I-CompBench do"
        )
        image_size: int | None = Field(
            None,
            ge=16,
            description="BLIP input side in px (T2I-CompBench: 480); None: the checkpoint's",
        )
        threshold: VerdictThreshold = 0.5
        device: Device = "auto"
        dtype: dtype_param("auto", "float32", "bfloat16", "float16") = Field(  # type: ignore[valid-type]
            "auto", description="model dtype; auto: bf16 on CUDA, fp32 on CPU"
        )
        batch_size: BatchSize = 8

    params: Params

    def load(self) -> _hf.HFBundle:
        """The VQA model and its processor (loaded once per process)."""
        p = self.params
        return _hf.load_checkpoint(
            self.name, p.weights, MODEL_TYPES, device=p.device, dtype=p.dtype, hint=_HINT,
            revision=p.revision,
        )  # fmt: skip

    def prepare(self) -> None:
        """Load the VQA model and, with ``phrases=spacy``, the spaCy pipeline."""
        self.load()
        if self.params.phrases == "spacy":
            from milr.critics._phrases import spacy_noun_phrases

            spacy_noun_phrases("a red car", self.params.spacy_model, self.name)

    def check_item(self, prompt: str, metadata: dict[str, Any]) -> None:
        """The item must yield at least one question."""
        self.questions(prompt, metadata if metadata is not None else {})

    # -- questions --------------------------------------------------------------------------

    def questions(self, prompt: str, metadata: dict[str, Any]) -> tuple[list[str], str]:
        """The questions for one image and the mode used; `MilrUserError` when there are none."""
        from milr.critics._phrases import noun_phrases

        if not isinstance(metadata, dict):
            raise MilrUserError(
                f"critic {self.name!r}: metadata must be a dict, got {type(metadata).__name__}"
            )
        p = self.params
        mode = p.mode
        if mode == "auto":
            mode = "colors" if metadata.get("include") else "phrases"
        if mode == "colors":
            include = metadata.get("include")
            if not isinstance(include, list) or not include:
                raise MilrUserError(
                    f"critic {self.name!r}: mode=colors needs GenEval metadata with 'include' "
                    f"clauses (class, count, color), got {sorted(metadata) or 'no metadata'} for "
                    f"prompt {prompt!r}; pass --metadata or use mode=phrases"
                )
            return color_questions(metadata), mode
        given = metadata.get("phrases")
        if given is not None:
            if not isinstance(given, list) or not all(isinstance(x, str) for x in given):
                raise MilrUserError(
                    f"critic {self.name!r}: metadata 'phrases' must be a list of strings, got {given!r}"
                )
            phrases = [x.strip() for x in given if x.strip()]
        else:
            phrases = noun_phrases(str(prompt or ""), p.phrases, p.spacy_model, self.name)
        if not phrases:
            raise MilrUserError(
                f"critic {self.name!r}: found no noun phrase to ask about in prompt {prompt!r}; "
                "pass metadata 'phrases' (a list such as ['a red car']) or GenEval 'include' "
                "clauses with mode=colors"
            )
        return [f"{ph}?" for ph in phrases[: p.max_phrases]], mode

    # -- scoring ----------------------------------------------------------------------------

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        rgb = [to_rgb(im, self.name) for im in images]
        asked = [self.questions(p, m or {}) for p, m in zip(prompts, metadata, strict=True)]
        bundle = self.load()
        run = self._blip if bundle.model_type == "blip" else self._git
        rows: list[list[dict[str, float]]] = []
        extra: dict[str, Any] = {}
        bs = self.params.batch_size
        for start in range(0, len(rgb), bs):
            chunk = list(range(start, min(start + bs, len(rgb))))
            flat = [(k, q) for k, i in enumerate(chunk) for q in asked[i][0]]
            scores, extra = run(bundle, [rgb[i] for i in chunk], flat)
            for k in range(len(chunk)):
                rows.append([s for (kk, _), s in zip(flat, scores, strict=True) if kk == k])
        out = []
        for (questions, mode), row in zip(asked, rows, strict=True):
            how = self.params.aggregate
            if how == "auto":
                how = "product" if mode == "phrases" else "mean"
            values = [r["score"] for r in row]
            score = math.prod(values) if how == "product" else sum(values) / len(values)
            score = min(1.0, max(0.0, score))
            threshold = self.params.threshold
            details = {
                "mode": mode,
                "aggregate": how,
                "model_type": bundle.model_type,
                "questions": [dict(r, question=q) for q, r in zip(questions, row, strict=True)],
                **extra,
            }
            out.append(
                CriticResult(score, None if threshold is None else score >= threshold, details)
            )
        return out

    def _blip(
        self, bundle: _hf.HFBundle, images: list[Any], flat: list[tuple[int, str]]
    ) -> tuple[list[dict[str, float]], dict[str, Any]]:
        import torch

        model, proc = bundle.model, bundle.processor
        tok = proc.tokenizer
        yes, no = _answer_ids(tok, self.name)
        enc = proc(
            text=[q for _, q in flat], padding=True, truncation=True,
            max_length=MAX_QUESTION_TOKENS, return_tensors="pt",
        )  # fmt: skip
        input_ids = enc["input_ids"].clone()
        enc_id = tok.convert_tokens_to_ids("[ENC]")
        start = "[CLS]"
        if self.params.enc_token and enc_id is not None and enc_id != tok.unk_token_id:
            input_ids[:, 0] = enc_id
            start = "[ENC]"
        mask = enc["attention_mask"].to(bundle.device)
        input_ids = input_ids.to(bundle.device)
        side = self.params.image_size
        sized = {"size": {"height": side, "width": side}} if side else {}
        pixels = proc.image_processor(images=images, return_tensors="pt", **sized)["pixel_values"]
        pixels = pixels.to(bundle.device, bundle.dtype)
        rows = torch.tensor([k for k, _ in flat], device=bundle.device)
        with torch.no_grad():
            image_embeds = model.vision_model(
                pixel_values=pixels, interpolate_pos_encoding=bool(side)
            ).last_hidden_state
            image_embeds = image_embeds.index_select(0, rows)
            image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=bundle.device)
            question = model.text_encoder(
                input_ids=input_ids, attention_mask=mask, encoder_hidden_states=image_embeds,
                encoder_attention_mask=image_mask,
            ).last_hidden_state  # fmt: skip
            # transformers' BLIP text decoder drops `encoder_attention_mask` in cross-attention
            # (5.x: the cross-attention module is called without it), so padded question states
            # would leak into the answer. Decode each question length separately, unpadded.
            logits = torch.empty(len(flat), model.text_decoder.config.vocab_size)
            lengths = mask.sum(dim=1)
            for n in torch.unique(lengths).tolist():
                idx = torch.nonzero(lengths == n).flatten()
                start_ids = torch.full(
                    (len(idx), 1), model.decoder_start_token_id, device=bundle.device
                )
                logits[idx.cpu()] = (
                    model.text_decoder(input_ids=start_ids, encoder_hidden_states=question[idx, :n])
                    .logits[:, 0, :]
                    .float()
                    .cpu()
                )
        return _yes_no(logits, yes, no), {"question_start": start}

    def _git(
        self, bundle: _hf.HFBundle, images: list[Any], flat: list[tuple[int, str]]
    ) -> tuple[list[dict[str, float]], dict[str, Any]]:
        import torch

        model, proc = bundle.model, bundle.processor
        tok = proc.tokenizer
        yes, no = _answer_ids(tok, self.name)
        seqs = [[tok.cls_token_id, *tok(q, add_special_tokens=False)["input_ids"]] for _, q in flat]
        width = max(len(s) for s in seqs)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=bundle.device)
        mask = torch.tensor(
            [[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=bundle.device
        )
        last = torch.tensor([len(s) - 1 for s in seqs], device=bundle.device)
        pixels = proc.image_processor(images=images, return_tensors="pt")["pixel_values"]
        rows = torch.tensor([k for k, _ in flat])
        pixels = pixels.index_select(0, rows).to(bundle.device, bundle.dtype)
        with torch.no_grad():
            logits = model(pixel_values=pixels, input_ids=input_ids, attention_mask=mask).logits
        # logits cover [image tokens, text tokens]; the text part is the last `width` positions
        text_logits = logits[:, -width:, :]
        picked = text_logits[torch.arange(len(seqs), device=bundle.device), last]
        return _yes_no(picked, yes, no), {}


def _answer_ids(tokenizer: Any, critic: str) -> tuple[int, int]:
    """Token ids of ``yes`` and ``no`` (single known tokens in BERT-style vocabularies)."""
    ids = []
    for word in ("yes", "no"):
        found = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(found) != 1 or found[0] == tokenizer.unk_token_id:
            raise MilrUserError(
                f"critic {critic!r}: the checkpoint's tokenizer has no single token for {word!r}; "
                "use a BLIP/GIT VQA checkpoint with a BERT vocabulary"
            )
        ids.append(int(found[0]))
    return ids[0], ids[1]


def _yes_no(logits: Any, yes: int, no: int) -> list[dict[str, float]]:
    import torch

    probs = torch.softmax(logits.float(), dim=-1).cpu()
    py, pn = probs[:, yes], probs[:, no]
    score = torch.where(py + pn > 0, py / (py + pn), torch.zeros_like(py))
    return [
        {"p_yes": float(a), "p_no": float(b), "score": float(s)}
        for a, b, s in zip(py.tolist(), pn.tolist(), score.tolist(), strict=True)
    ]


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    register(VQACritic)
