"""Shared open_clip loading for the ``clip``, ``hps`` and ``geneval`` (colour) critics.

Weights are given as one string:

* a checkpoint file (``.pt``/``.pth``/``.bin``/``.safetensors``; a bare state dict or a dict
  with ``state_dict``, which is how HPS v2 checkpoints are stored) loaded into ``arch``;
* ``hf://OWNER/NAME/FILE`` — one such file of a Hugging Face Hub repo, downloaded into the
  Hugging Face cache on first use (`milr.hub`; e.g. ``hf://xswu/HPSv2/HPS_v2.1_compressed.pt``);
* ``local-dir:/path`` (or the folder's plain path) — a folder with ``open_clip_config.json``
  and weights (``arch`` ignored);
* ``hf-hub:OWNER/NAME`` — such a folder on the Hub (open_clip's spelling; downloaded by
  `milr.hub`, e.g. ``hf-hub:timm/vit_large_patch14_clip_224.openai``);
* a pretrained tag of ``arch`` (``openai``, ``laion2b_s32b_b79k`` ...) — downloaded by open_clip
  into the Hugging Face cache when online, taken from it offline; otherwise an error names the
  file to fetch;
* ``random`` — seeded random initialisation, for tests and benchmarks only.

OpenAI's CLIP weights were trained with QuickGELU; open_clip builds ``ViT-L-14`` with GELU
unless told (it only warns for the ``openai`` tag, and says nothing for a file or a folder),
which changes every score. milr builds QuickGELU whenever the weights are OpenAI's, whatever
the spelling: the ``openai`` tag (any tag whose open_clip config says ``quick_gelu``), a
folder or Hub id whose name or ``open_clip_config.json`` says so (``*.openai``), or a file
named like OpenAI's release (``ViT-L-14.pt``) or with ``openai`` in its path. ``quick_gelu=``
forces either choice. Files are checked whole before loading (`milr.weight_files`).

Models are cached per process, keyed by (arch, weights, file size and mtime, QuickGELU, device,
dtype).
"""

from __future__ import annotations

import os
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from milr import devices
from milr.checkpoints import check_state_dict_keys, first_line
from milr.critic import require
from milr.errors import MilrUserError
from milr.params import BatchSize, CriticParams, Device, VerdictThreshold, dtype_param

_CACHE: dict[tuple[Any, ...], OpenClipBundle] = {}
_LOCK = threading.Lock()
_CKPT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


@dataclass
class OpenClipBundle:
    """A loaded open_clip model with its eval preprocessing and tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any
    device: Any
    dtype: Any
    source: str
    #: Whether the model was built with QuickGELU (OpenAI's weights; see the module docstring).
    quick_gelu: bool = False


def resolve_device(device: str | None, critic: str) -> str:
    """``auto``/None -> ``cuda`` when available else ``cpu`` (`milr.devices.resolve_device`)."""
    require("torch", None, critic)
    return devices.resolve_device(device, f"critic {critic!r}")


class OpenClipParams(CriticParams):
    """Parameters shared by the open_clip critics (``clip``, ``hps``)."""

    weights: str = Field(
        description="checkpoint file, local-dir:/path, pretrained tag of arch, or 'random' (tests)",
        json_schema_extra={
            "hint": "pass a checkpoint file, local-dir:/path, a pretrained tag (online), or "
            "'random' (tests only), e.g. --critic clip:weights=/models/ViT-L-14.pt"
        },
    )
    arch: str = Field("ViT-L-14", description="open_clip architecture name")
    quick_gelu: bool | None = Field(
        None,
        description="build with QuickGELU; None: when the weights are OpenAI's (any spelling)",
    )
    revision: str | None = Field(
        None, description="Hub revision of hf:// or hf-hub: weights; None: the default branch"
    )
    threshold: VerdictThreshold = None
    device: Device = "auto"
    dtype: dtype_param("float32", "float16", "bfloat16") = Field(  # type: ignore[valid-type]
        "float32", description="model precision"
    )
    batch_size: BatchSize = 32


def torch_dtype(dtype: str) -> Any:
    import torch

    return getattr(torch, dtype)


def describe_weights(weights: str | None, critic: str, param: str = "weights") -> None:
    """Cheap validation of a weights string at construction time (files must exist).

    ``param`` is the critic's parameter that holds it, named in the error with an example.
    """
    if weights is None or not isinstance(weights, str) or not weights.strip():
        got = "none was given" if weights is None else f"got {weights!r}"
        raise MilrUserError(
            f"critic {critic!r} needs weights: set {param}= to a checkpoint file, local-dir:/path, "
            f"a pretrained tag (online) or 'random' (tests only), e.g. "
            f"--critic {critic}:{param}=/models/ViT-L-14.pt; {got}"
        )
    if weights.startswith("hf://"):
        from milr.hub import parse_hf_uri

        parse_hf_uri(weights)  # a file must be named
        return
    if weights.startswith("hf-hub:"):
        from milr.hub import is_hub_id

        if not is_hub_id(weights[len("hf-hub:") :]):
            raise MilrUserError(
                f"critic {critic!r}: {weights!r} needs a Hub id after hf-hub: (OWNER/NAME)"
            )
        return
    if Path(weights).expanduser().is_dir():
        weights = f"local-dir:{weights}"  # a plain folder reads as local-dir:
    if weights.startswith("local-dir:"):
        folder = Path(weights[len("local-dir:") :]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise MilrUserError(
                f"critic {critic!r}: {weights!r} needs a folder containing open_clip_config.json "
                f"and the weights; {folder / 'open_clip_config.json'} does not exist"
            )
    elif _looks_like_path(weights) and not Path(weights).expanduser().is_file():
        raise MilrUserError(
            f"critic {critic!r}: weights file {weights!r} does not exist; put the checkpoint there "
            "or pass the path where it is"
        )


def _looks_like_path(weights: str) -> bool:
    return os.sep in weights or "/" in weights or weights.endswith(_CKPT_SUFFIXES)


def load_open_clip(
    arch: str,
    weights: str,
    *,
    device: str,
    dtype: str,
    critic: str,
    extra: str | None,
    quick_gelu: bool | None = None,
    revision: str | None = None,
) -> OpenClipBundle:
    """Load (once per process) an open_clip model, its preprocessing and tokenizer.

    `weights` takes every spelling of the module docstring; Hub spellings are fetched first
    (`milr.hub`, one-line errors). `quick_gelu` None decides by the weights (OpenAI's: on).
    """
    describe_weights(weights, critic)
    weights = _localise(weights, critic, revision)
    key_file: tuple[Any, ...] = ()
    path = Path(weights).expanduser()
    if _looks_like_path(weights) and path.is_file():
        st = path.stat()
        key_file = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    key = (arch, weights, key_file, quick_gelu, device, dtype)
    with _LOCK:
        bundle = _CACHE.get(key)
        if bundle is None:
            bundle = _load(
                arch,
                weights,
                device=device,
                dtype=dtype,
                critic=critic,
                extra=extra,
                quick_gelu=quick_gelu,
            )
            _CACHE[key] = bundle
    return bundle


def _localise(weights: str, critic: str, revision: str | None) -> str:
    """Hub spellings (``hf://``, ``hf-hub:``) -> a local file or ``local-dir:`` folder."""
    from milr.hub import resolve_file

    who = f"critic {critic!r}"
    if weights.startswith("hf://"):
        return str(resolve_file(weights, who=who, revision=revision).path)
    if weights.startswith("hf-hub:"):
        return f"local-dir:{hub_folder(weights[len('hf-hub:') :], who, revision)}"
    if Path(weights).expanduser().is_dir():
        return f"local-dir:{weights}"
    return weights


def hub_folder(repo_id: str, who: str, revision: str | None = None) -> Path:
    """The snapshot folder of an open_clip Hub repo with its config and ONE weight file
    (``open_clip_model.safetensors`` when the repo has it, else ``open_clip_pytorch_model.bin``),
    downloaded on first use (`milr.hub.resolve`)."""
    from milr.hub import resolve

    folder = resolve(
        repo_id,
        who=who,
        revision=revision,
        allow_patterns=["open_clip_config.json", "open_clip_model.safetensors"],
    ).path
    if not (folder / "open_clip_model.safetensors").is_file():
        folder = resolve(
            repo_id,
            who=who,
            revision=revision,
            allow_patterns=["open_clip_config.json", "open_clip_pytorch_model.bin"],
        ).path
    return folder


def openai_weights(arch: str, weights: str) -> bool:
    """Whether `weights` are OpenAI's CLIP weights (trained with QuickGELU); see the module."""
    import json

    open_clip = require("open_clip", None, "clip")
    if weights.startswith("local-dir:"):
        folder = Path(weights[len("local-dir:") :]).expanduser()
        try:
            cfg = json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))
            if "quick_gelu" in cfg.get("model_cfg", {}):
                return bool(cfg["model_cfg"]["quick_gelu"])
        except (OSError, ValueError, AttributeError):
            pass
        return any("openai" in n.lower() for n in _names(folder))
    path = Path(weights).expanduser()
    if _looks_like_path(weights) and path.is_file():
        cfg = open_clip.get_pretrained_cfg(arch, "openai") or {}
        release = str(cfg.get("url", "")).rsplit("/", 1)[-1]
        names = _names(path)
        return bool(release and path.name == release) or any("openai" in n.lower() for n in names)
    cfg = open_clip.get_pretrained_cfg(arch, weights) or {}
    return bool(cfg.get("quick_gelu"))


def _names(path: Path) -> list[str]:
    """The file or folder name and, inside the Hugging Face cache, the repo name."""
    names = [path.name]
    for part in path.absolute().parts:
        if part.startswith("models--"):
            names.append(part)
    return names


def clear_cache() -> None:
    """Drop every cached model (frees memory; the next use reloads)."""
    with _LOCK:
        _CACHE.clear()


def _load(
    arch: str,
    weights: str,
    *,
    device: str,
    dtype: str,
    critic: str,
    extra: str | None,
    quick_gelu: bool | None = None,
) -> OpenClipBundle:
    open_clip = require("open_clip", extra, critic)
    torch = require("torch", extra, critic)
    from milr.weight_files import check_weights_path

    tdtype = torch_dtype(dtype)
    model_name = arch
    quick = (
        bool(quick_gelu)
        if quick_gelu is not None
        else weights != "random" and openai_weights(arch, weights)
    )
    if weights.startswith("local-dir:"):
        model_name = weights
        check_weights_path(weights[len("local-dir:") :], f"critic {critic!r}")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                weights, device="cpu", force_quick_gelu=quick
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise MilrUserError(f"critic {critic!r}: could not load {weights!r}: {exc}") from exc
        source = weights
    else:
        if arch not in open_clip.list_models():
            raise MilrUserError(
                f"critic {critic!r}: arch={arch!r} is not an open_clip architecture; known: "
                f"{', '.join(open_clip.list_models()[:12])}, ... (or register one with "
                "open_clip.add_model_config)"
            )
        path = Path(weights).expanduser()
        if weights == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=None, force_quick_gelu=quick
                )
            source = "random"
        elif path.is_file():
            check_weights_path(path, f"critic {critic!r}")
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=None, force_quick_gelu=quick
            )
            try:
                found = open_clip.load_checkpoint(model, str(path), strict=False)
            except Exception as exc:  # unpickling or shape mismatches
                raise MilrUserError(
                    f"critic {critic!r}: checkpoint {str(path)!r} does not load into open_clip "
                    f"{arch!r}: {first_line(exc)[:300]}"
                ) from exc
            check_state_dict_keys(  # missing or foreign tensors: one line naming them
                getattr(found, "missing_keys", []),
                getattr(found, "unexpected_keys", []),
                path,
                f"critic {critic!r} (open_clip {arch})",
            )
            source = str(path.absolute())  # not resolve(): a cache file links to a blob
        else:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            if weights not in tags:
                raise MilrUserError(
                    f"critic {critic!r}: weights={weights!r} is neither an existing file nor a "
                    f"pretrained tag of {arch!r} (tags: {', '.join(tags) or 'none'})"
                )
            cfg = open_clip.get_pretrained_cfg(arch, weights) or {}
            if cfg.get("hf_hub"):  # fetched by milr.hub first: one-line errors, whole files
                repo = cfg["hf_hub"].strip("/")
                check_weights_path(hub_folder(repo, f"critic {critic!r}"), f"critic {critic!r}")
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=weights, force_quick_gelu=quick
                )
            except Exception as exc:
                cfg = open_clip.get_pretrained_cfg(arch, weights) or {}
                if cfg.get("hf_hub"):
                    repo, fname = os.path.split(cfg["hf_hub"])
                    fname = fname or "open_clip_pytorch_model.bin"
                    where = f"{fname} from the Hugging Face repo {repo}"
                else:
                    url = cfg.get("url", "")
                    fname = url.rsplit("/", 1)[-1] or "checkpoint.pt"
                    where = f"{fname} from {url or 'the open_clip pretrained list'}"
                raise MilrUserError(
                    f"critic {critic!r}: pretrained {arch}/{weights} could not be fetched "
                    f"({textwrap.shorten(first_line(exc), 160, placeholder=' …')}); download {where} on a machine with internet "
                    f"(`milr download` with the same options) and pass weights=/path/to/{fname}"
                ) from exc
            source = f"{arch}:{weights}"
    model = model.to(device=device, dtype=tdtype).eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    bundle = OpenClipBundle(model, preprocess, tokenizer, torch.device(device), tdtype, source)
    bundle.quick_gelu = quick
    return bundle


def encode_images(bundle: OpenClipBundle, images: list[Any], batch_size: int) -> Any:
    """L2-normalised image features of RGB PIL images, computed in chunks of `batch_size`."""
    import torch

    feats = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            pixels = torch.stack([bundle.preprocess(im) for im in chunk])
            pixels = pixels.to(device=bundle.device, dtype=bundle.dtype)
            f = bundle.model.encode_image(pixels, normalize=True)
            feats.append(f.float())
    return torch.cat(feats)


def encode_texts(bundle: OpenClipBundle, texts: list[str], batch_size: int) -> Any:
    """L2-normalised text features, computed in chunks of `batch_size`."""
    import torch

    feats = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            tokens = bundle.tokenizer(texts[i : i + batch_size]).to(bundle.device)
            feats.append(bundle.model.encode_text(tokens, normalize=True).float())
    return torch.cat(feats)


def image_text_cosines(
    bundle: OpenClipBundle, images: list[Any], prompts: list[str], batch_size: int
) -> list[float]:
    """Cosine similarity of each image with its own prompt (prompts encoded once each)."""
    unique = list(dict.fromkeys(prompts))
    text = encode_texts(bundle, unique, batch_size)
    index = {p: i for i, p in enumerate(unique)}
    img = encode_images(bundle, images, batch_size)
    rows = text[[index[p] for p in prompts]]
    return [float(v) for v in (img * rows).sum(-1)]


def weights_ids(critic: Any) -> list[str]:
    """What a critic with `OpenClipParams` loads, as ``Critic.weights_ids`` reports it."""
    from milr.weight_sources import open_clip_id, with_revision

    found = open_clip_id(critic.params.arch, critic.params.weights)
    return [with_revision(found, critic.params.revision)] if found else []


def critic_bundle(critic: Any) -> OpenClipBundle:
    """The cached model of a critic whose ``params`` are `OpenClipParams`."""
    p = critic.params
    device = resolve_device(p.device, critic.name)
    return load_open_clip(
        p.arch,
        p.weights,
        device=device,
        dtype=p.dtype,
        critic=critic.name,
        extra=critic.extra,
        quick_gelu=p.quick_gelu,
        revision=p.revision,
    )


def check_prompts(prompts: list[Any], critic: str) -> list[str]:
    """Require every prompt to be a str (image-prompt critics); returns them as a list."""
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise MilrUserError(f"{critic} critic: prompt {i} is {type(p).__name__}, expected str")
    return list(prompts)


def prompt_cosines(
    critic: Any, images: list[Any], prompts: list[Any]
) -> tuple[OpenClipBundle, list[float]]:
    """Check inputs, load the critic's model and return it with each image-prompt cosine."""
    from milr.critics._images import to_rgb

    rgb = [to_rgb(im, critic.name) for im in images]
    texts = check_prompts(prompts, critic.name)
    bundle = critic_bundle(critic)
    return bundle, image_text_cosines(bundle, rgb, texts, critic.params.batch_size)
