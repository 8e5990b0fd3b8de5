"""What the local judges (``judge``, ``self-judge``) do with a model: read P(yes) from one forward
pass, write answers greedily, and turn answers into critic results under a rubric.

Shared so both judges score identically; the rubric parsers themselves live in
`milr.critics.rubrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from milr import CriticResult, MilrUserError
from milr.critics.rubrics import (
    JudgeReplyError,
    Rubric,
    RubricReplyError,
    normalize_token,
    template_sha256,
)

if TYPE_CHECKING:
    from PIL.Image import Image


def yes_no_tokens(
    tokenizer: Any, yes_words: tuple[str, ...], no_words: tuple[str, ...], critic: str
) -> tuple[list[int], list[int]]:
    """Token ids of the words (and their leading-space forms) that encode to one known token."""
    unk = getattr(tokenizer, "unk_token_id", None)

    def ids(words: tuple[str, ...], param: str) -> list[int]:
        found: list[int] = []
        for word in words:
            for form in (word, " " + word):
                enc = tokenizer.encode(form, add_special_tokens=False)
                if len(enc) == 1 and enc[0] != unk and enc[0] not in found:
                    found.append(int(enc[0]))
        if not found:
            raise MilrUserError(
                f"{critic} critic: none of {param}={list(words)!r} is a single token of this "
                f"model's tokenizer; pass {param} with words the model answers with"
            )
        return found

    yes, no = ids(yes_words, "yes_words"), ids(no_words, "no_words")
    if set(yes) & set(no):
        raise MilrUserError(
            f"{critic} critic: yes_words and no_words share tokens {sorted(set(yes) & set(no))}"
        )
    return yes, no


def _to_device(inputs: Any, device: Any, dtype: Any) -> dict[str, Any]:
    return {
        k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device))
        if hasattr(v, "to")
        else v
        for k, v in inputs.items()
    }


def _batches(
    processor: Any,
    texts: list[str],
    images: list[Image],
    *,
    padding_side: str,
    device: Any,
    dtype: Any,
    batch_size: int,
    add_special_tokens: bool,
) -> Iterator[dict[str, Any]]:
    """The processor's inputs for each run of `batch_size` (text, image) rows, padded on
    `padding_side` and moved to `device` (floating tensors also to `dtype`)."""
    for start in range(0, len(texts), batch_size):
        inputs = processor(
            text=texts[start : start + batch_size],
            images=images[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            padding_side=padding_side,
            add_special_tokens=add_special_tokens,
        )
        yield _to_device(inputs, device, dtype)


def yes_no_scores(
    model: Any,
    processor: Any,
    texts: list[str],
    images: list[Image],
    yes_ids: list[int],
    no_ids: list[int],
    *,
    device: Any,
    dtype: Any,
    batch_size: int,
    add_special_tokens: bool,
) -> list[dict[str, float]]:
    """P(yes)/(P(yes)+P(no)) of the next token after each text (with its image), batched.

    Rows are right-padded and read at their own last real token, so padding never changes a
    score. Only the hidden states at those positions go through the output head (full-sequence
    logits of a 150k-vocabulary model would cost gigabytes).
    """
    import torch

    out: list[dict[str, float]] = []
    head = model.get_output_embeddings()
    text_cfg = (
        model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    )
    softcap = getattr(text_cfg, "final_logit_softcapping", None)
    yes_t = torch.tensor(yes_ids)
    no_t = torch.tensor(no_ids)
    batches = _batches(
        processor, texts, images, padding_side="right", device=device, dtype=dtype,
        batch_size=batch_size, add_special_tokens=add_special_tokens,
    )  # fmt: skip
    for inputs in batches:
        mask = inputs["attention_mask"]
        last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(dim=1)
        with torch.no_grad():
            hidden = model.model(**inputs).last_hidden_state
            picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
            logits = head(picked).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
        logp = torch.log_softmax(logits, dim=-1).cpu()
        lp_yes = torch.logsumexp(logp[:, yes_t], dim=-1)
        lp_no = torch.logsumexp(logp[:, no_t], dim=-1)
        score = torch.sigmoid(lp_yes - lp_no)
        for s, y, n in zip(
            score.tolist(), lp_yes.exp().tolist(), lp_no.exp().tolist(), strict=True
        ):
            out.append({"score": float(s), "p_yes": float(y), "p_no": float(n)})
    return out


def generate_answers(
    model: Any,
    processor: Any,
    texts: list[str],
    images: list[Image],
    *,
    device: Any,
    dtype: Any,
    batch_size: int,
    add_special_tokens: bool,
    max_new_tokens: int,
) -> list[str]:
    """The model's greedy answer to each text (with its image), batched and left-padded.

    At most `max_new_tokens` new tokens per answer; decoding stops at the model's end-of-text
    token. Special tokens are dropped from the returned text.
    """
    import torch

    tokenizer = getattr(processor, "tokenizer", processor)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    answers: list[str] = []
    batches = _batches(
        processor, texts, images, padding_side="left", device=device, dtype=dtype,
        batch_size=batch_size, add_special_tokens=add_special_tokens,
    )  # fmt: skip
    for inputs in batches:
        with torch.no_grad():
            out = model.generate(
                **inputs,
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        answers.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return answers


def rubric_results(
    rubric: Rubric,
    answers: list[str],
    texts: list[str],
    threshold: float | None,
    model: str,
    critic: str,
    template_hash: str,
) -> list[CriticResult]:
    """Critic results from written answers; `JudgeReplyError` names every unreadable one (and
    keeps the results of the others)."""
    out: list[CriticResult | None] = []
    failures: list[tuple[int, str]] = []
    for i, (answer, text) in enumerate(zip(answers, texts, strict=True)):
        try:
            reply = rubric.parse(answer)
        except RubricReplyError as exc:
            failures.append(
                (
                    i,
                    f"the answer cannot be read as rubric {rubric.name!r}: {exc}; "
                    f"answer: {answer[:200]!r}",
                )
            )
            out.append(None)
            continue
        passed = reply.passed
        if rubric.name != "checklist" and threshold is not None:
            passed = reply.score >= threshold
        details = {
            "rubric": rubric.name,
            "answer": answer,
            "prompt_sha256": template_sha256(text),
            "template_sha256": template_hash,
            "model": model,
            **reply.details,
        }
        out.append(CriticResult(min(1.0, max(0.0, reply.score)), passed, details))
    if failures:
        raise JudgeReplyError(f"{critic} ({model})", failures, out)
    return [r for r in out if r is not None]


def yes_no_results(
    scores: list[dict[str, float]],
    questions: list[str],
    threshold: float | None,
    model: str,
    *,
    critic: str = "judge",
    min_share: float = 0.0,
    answer: Callable[[list[int]], list[str | None]] | None = None,
    yes_words: tuple[str, ...] = ("yes", "Yes"),
    no_words: tuple[str, ...] = ("no", "No"),
) -> list[CriticResult]:
    """Critic results from `yes_no_scores` rows: verdict against `threshold`, question shown.

    A row scores from probabilities (``method: probabilities``) only when ``p_yes + p_no`` (the
    share of the next token's probability that yes and no hold, ``yes_no_share``) is at least
    `min_share`. Below it, ``answer(rows)`` gives the judge's greedy answers for those rows
    (None: the judge cannot write one); an answer whose first word is one of `yes_words` /
    `no_words` (compared after `normalize_token`) scores 1.0 / 0.0 (``method: answer``), and any
    other answer fails its image: `JudgeReplyError` quotes the answer and the share (and keeps
    the other images' results). A score is never made from tail mass.
    """
    out: list[CriticResult | None] = []
    low: list[int] = []
    for i, (s, q) in enumerate(zip(scores, questions, strict=True)):
        share = s["p_yes"] + s["p_no"]
        details = {
            "rubric": "yesno",
            "p_yes": s["p_yes"],
            "p_no": s["p_no"],
            "yes_no_share": share,
            "question": q,
            "model": model,
        }
        if share >= min_share and share > 0:
            out.append(
                CriticResult(
                    s["score"],
                    None if threshold is None else s["score"] >= threshold,
                    {**details, "method": "probabilities"},
                )
            )
        else:
            out.append(None)
            low.append(i)
    if not low:
        return [r for r in out if r is not None]
    answers: list[str | None] = answer(low) if answer is not None else [None] * len(low)
    yes = {normalize_token(w) for w in yes_words}
    no = {normalize_token(w) for w in no_words}
    failures: list[tuple[int, str]] = []
    for i, text in zip(low, answers, strict=True):
        s = scores[i]
        share = s["p_yes"] + s["p_no"]
        words = (text or "").split()
        first = normalize_token(words[0]) if words else ""
        if text is not None and first and (first in yes or first in no):
            score = 1.0 if first in yes else 0.0
            out[i] = CriticResult(
                score,
                None if threshold is None else score >= threshold,
                {
                    "rubric": "yesno",
                    "p_yes": s["p_yes"],
                    "p_no": s["p_no"],
                    "yes_no_share": share,
                    "question": questions[i],
                    "model": model,
                    "method": "answer",
                    "answer": text,
                },
            )
            continue
        said = (
            f"the answer {text[:80]!r} starts with none of yes_words={list(yes_words)!r} "
            f"or no_words={list(no_words)!r}"
            if text is not None
            else "the judge cannot write an answer to read instead"
        )
        failures.append(
            (
                i,
                f"the answer cannot be read as rubric 'yesno': {said}; yes and no hold "
                f"{share:.1%} of the next token's probability (below "
                f"min_yes_no_share={min_share:g})",
            )
        )
    if failures:
        raise JudgeReplyError(f"{critic} ({model})", failures, out)
    return [r for r in out if r is not None]
