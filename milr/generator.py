"""The generator protocol: what the MILR optimizer needs from a unified text-and-image model.

An adapter (e.g. `milr.models.janus.JanusGenerator`) implements these few methods over a
concrete model and registers itself through the ``register_generators`` hook, so another
unified model plugs in without touching the optimizer. `load_generator` resolves a name, a
local directory or a hub id to an adapter instance.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from milr.errors import MilrUserError, UnsupportedOperation
from milr.generated import SAMPLING_SCHEME, ImageTokens, Reasoning  # noqa: F401 - defined there
from milr.generator_batch import BatchedDefaults

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image


class Generator(BatchedDefaults, ABC):
    """A unified model seen through the operations MILR needs."""

    #: Registry name of the adapter (``[a-z0-9_-]+``).
    name: ClassVar[str] = ""
    #: Checkpoint `load_generator(name)` loads when given just the adapter name.
    default_checkpoint: ClassVar[str | None] = None
    #: How `sample_image_tokens` draws (recorded in trajectories); adapters that use milr's
    #: scheme set `SAMPLING_SCHEME`, others their own name (None: not recorded).
    sampling_scheme: ClassVar[str | None] = None

    device: Any
    dtype: Any

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def can_load(cls, path: str | Path) -> bool:
        """Whether the local checkpoint directory `path` is in this adapter's format (cheap)."""

    @classmethod
    @abstractmethod
    def from_pretrained(
        cls, path: str | Path, device: str | None = None, dtype: str | None = None
    ) -> Generator:
        """Load a checkpoint from a local directory or a hub id."""

    # -- sizes -------------------------------------------------------------------------------
    @property
    def default_cfg_scale(self) -> float:
        """Guidance scale used when the run does not set one (5.0: the paper's, for Janus-Pro)."""
        return 5.0

    @property
    def default_text_prefix(self) -> str:
        """Text prefix rule used when the run does not set one (``paper``: the authors' rule)."""
        return "paper"

    @property
    @abstractmethod
    def image_token_count(self) -> int:
        """Number of discrete tokens per image (576 for Janus-Pro at 384 px)."""

    @property
    @abstractmethod
    def max_reasoning_tokens(self) -> int:
        """Upper bound on new reasoning tokens (the paper's: 512)."""

    # -- text --------------------------------------------------------------------------------
    @abstractmethod
    def write_reasoning(self, prompt: str, max_tokens: int | None = None) -> Reasoning:
        """Write the reasoning ("visualization") for `prompt` greedily, capturing latents.

        `max_tokens` caps the new tokens for this call (None: `max_reasoning_tokens`); the
        adapter's own settings are never changed by a run.
        """

    @abstractmethod
    def continue_reasoning(
        self, prompt: str, prefix_tokens: list[int], max_tokens: int | None = None
    ) -> Reasoning:
        """Force `prefix_tokens` as the start of the reasoning, then continue greedily.

        `max_tokens` caps the reasoning length (prefix included) as in `write_reasoning`.
        """

    @abstractmethod
    def image_text(self, prompt: str, reasoning: str | None) -> str:
        """The text the image is conditioned on (``"{prompt}. {reasoning}"`` or the prompt)."""

    # -- image -------------------------------------------------------------------------------
    @abstractmethod
    def sample_image_tokens(
        self,
        prompt_text: str,
        prefix_tokens: torch.Tensor | None = None,
        batch: int = 1,
        cfg_scale: float = 5.0,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        capture: int = 0,
    ) -> ImageTokens:
        """Sample image tokens with CFG; force ``prefix_tokens`` (``[B, N]``) first if given."""

    # -- heads (differentiable) --------------------------------------------------------------
    @abstractmethod
    def text_head(self, latents: torch.Tensor) -> torch.Tensor:
        """Text logits ``[..., V_text]`` (float32) for latents ``[..., d]``; differentiable."""

    @abstractmethod
    def image_head(self, latents: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        """CFG-fused image logits ``u + s·(c − u)`` (float32) for latents ``[..., 2, d]``."""

    # -- pixels ------------------------------------------------------------------------------
    @abstractmethod
    def decode(self, tokens: torch.Tensor) -> list[Image]:
        """Decode image tokens ``[B, n]`` to RGB PIL images."""

    # -- understanding (optional) ------------------------------------------------------------
    #: Whether `understand` is implemented (the ``self-judge`` critic needs it).
    supports_understanding: ClassVar[bool] = False

    def understand(
        self,
        images: Sequence[Image],
        questions: Sequence[str],
        *,
        template: str | None = None,
        batch_size: int = 8,
    ) -> torch.Tensor:
        """Next-token log-probabilities after the model is shown each image and asked a question.

        Optional protocol method (declare ``supports_understanding = True`` when implemented).
        `images` are RGB PIL images, `questions` one text per image (same length). `template`
        is the understanding-mode chat layout with ``{image}`` (where the image goes) and
        ``{question}``; None uses the adapter's own. Special tokens (BOS) are the adapter's
        business: callers never write them. Returns a float32 CPU tensor ``[len(images), V]``
        of log-probabilities over the text vocabulary for the first answer token.

        Raises `UnsupportedOperation` (a `MilrUserError`) when the adapter has no understanding
        mode.
        """
        raise UnsupportedOperation(
            f"generator {self.name or type(self).__name__!r} has no image-understanding mode "
            "(Generator.understand); critics that judge with the run's own model, such as "
            "self-judge, need an adapter that implements it (the Janus adapter does)"
        )

    def answer(
        self,
        images: Sequence[Image],
        questions: Sequence[str],
        *,
        template: str | None = None,
        max_new_tokens: int = 256,
        batch_size: int = 8,
    ) -> list[str]:
        """The model's greedy written answer to each question about its image (optional).

        Same inputs as `understand`; at most `max_new_tokens` new tokens per answer, stopping
        at end of text; special tokens dropped. Raises `UnsupportedOperation` when the adapter
        has no understanding mode.
        """
        raise UnsupportedOperation(
            f"generator {self.name or type(self).__name__!r} has no image-understanding mode "
            "(Generator.answer); critics that judge with the run's own model need one"
        )

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` without special tokens (optional; needed with `understand`)."""
        raise UnsupportedOperation(
            f"generator {self.name or type(self).__name__!r} does not expose its tokenizer "
            "(Generator.tokenize)"
        )

    @property
    def unk_token_id(self) -> int | None:
        """Id of the unknown token, if the tokenizer has one (None otherwise)."""
        return None

    def describe_prompts(self, prompt: str, reasoning: str | None) -> dict[str, Any]:
        """The exact prompts of a run, for trajectories (optional; default: none).

        Keys: ``style`` (the prompt style's name), ``reasoning`` and ``image`` (the decoded
        reasoning prompt and image prompt, special tokens shown).
        """
        return {}

    def check_prompt(self, prompt: str) -> None:
        """Raise `MilrUserError` when `prompt` cannot be generated (empty, too long)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise MilrUserError("empty prompt; pass the text of the image to generate")

    #: Seconds the adapter spent compiling its per-token steps (`set_loop_options`).
    compile_s: float = 0.0

    def set_loop_options(
        self, *, kv_cache: str | None = None, compile: bool = False, backend: str | None = None
    ) -> None:
        """Choose the generation loops' KV cache (``"dynamic"``/``"static"``) and whether to
        compile their per-token steps (optional; results must not change).

        The default accepts only the defaults and raises `MilrUserError` otherwise (the Janus
        adapter implements both, `milr.models.janus_static`).
        """
        if kv_cache not in (None, "dynamic") or compile:
            raise MilrUserError(
                f"generator {self.name or type(self).__name__!r} has no static KV cache or "
                "compiled steps; drop --kv-cache/--compile"
            )

    def rng(self, seed: int) -> torch.Generator:
        """A `torch.Generator` on the model's device seeded with `seed`."""
        import torch

        dev = getattr(self, "device", "cpu")
        g = torch.Generator(device=str(dev) if str(dev).startswith("cuda") else "cpu")
        g.manual_seed(int(seed))
        return g

    def describe(self) -> dict[str, Any]:
        """Provenance for trajectories: adapter name, checkpoint, device, dtype and, when the
        adapter declares one, its image ``sampling`` scheme (`sampling_scheme`)."""
        out = {
            "adapter": self.name,
            "checkpoint": str(getattr(self, "checkpoint", "")),
            "device": str(getattr(self, "device", "")),
            "dtype": str(getattr(self, "dtype", "")).replace("torch.", ""),
        }
        if self.sampling_scheme is not None:
            out["sampling"] = self.sampling_scheme
        return out


# -- resolution ---------------------------------------------------------------------------------


class NamedCheckpoint:
    """A checkpoint registered under a short name (e.g. ``shapes``) for an existing adapter.

    Made with `named_checkpoint` and registered through the ``register_generators`` hook like
    an adapter, so ``load_generator(NAME)`` loads it and ``milr plugins`` lists it; the core
    never imports the package that ships the weights.
    """

    name: ClassVar[str] = ""
    #: The adapter class that loads the checkpoint.
    adapter: ClassVar[type[Generator]]
    description: ClassVar[str] = ""

    @staticmethod
    def locate() -> str | Path:
        """The checkpoint directory or hub id (may verify files; raises `MilrUserError`)."""
        raise NotImplementedError

    @classmethod
    def can_load(cls, path: str | Path) -> bool:
        """Never picked for an arbitrary directory: only loaded by its name."""
        return False

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        **options: Any,
    ) -> Generator:
        """Load the named checkpoint (or `path`, when given) with the adapter."""
        return cls.adapter.from_pretrained(  # type: ignore[call-arg]
            cls.locate() if path is None else path, device=device, dtype=dtype, **options
        )


def named_checkpoint(
    name: str,
    adapter: type[Generator],
    locate: Callable[[], str | Path],
    description: str = "",
) -> type[NamedCheckpoint]:
    """A `NamedCheckpoint` class to pass to ``register(...)`` in a ``register_generators`` hook.

    `locate` is called at load time only (a lazy import of the package holding the weights
    belongs inside it).
    """
    attrs = {
        "name": name,
        "adapter": adapter,
        "description": description,
        "locate": staticmethod(locate),
        "__doc__": description or f"the {name!r} checkpoint of the {adapter.name!r} adapter",
    }
    return type(f"NamedCheckpoint_{name.replace('-', '_')}", (NamedCheckpoint,), attrs)


def _looks_local(name: str) -> bool:
    """Hub ids are exactly ``owner/name``; anything else is meant as a local path."""
    return name.startswith(("/", "./", "../", "~", ".")) or name.count("/") != 1 or "\\" in name


def _hub_config_dir(repo_id: str, revision: str | None = None) -> Path:
    """Local directory holding the Hub checkpoint's config.json (downloaded unless offline;
    every failure is one `MilrUserError` line naming the repo and the fix, see `milr.hub`)."""
    from milr.hub import resolve

    return resolve(repo_id, who="model", filename="config.json", revision=revision).path.parent


def load_generator(
    name_or_path: str | Path,
    device: str | None = None,
    dtype: str | None = None,
    allow_missing: bool = False,
    prompt_style: str | None = None,
    prompt_file: str | Path | None = None,
    revision: str | None = None,
) -> Generator:
    """Resolve `name_or_path` to a loaded generator.

    Accepts a registered checkpoint name (``shapes``, the tiny model shipped with milr), a
    registered adapter name (loads its default checkpoint), ``ADAPTER:PATH`` to force an adapter, a local checkpoint directory, or
    a Hub id, downloaded into the Hugging Face cache on first use (``HF_HUB_OFFLINE=1`` makes it
    cache-only; `revision` pins a branch, tag or commit; see `milr.hub`).

    ``allow_missing=True`` loads a checkpoint whose weight files lack tensors or carry
    unexpected ones (refused by default: `milr.errors.CheckpointError` names them and the file).
    ``prompt_style``/``prompt_file`` choose the adapter's prompt layout (Janus: ``paper``,
    ``hf``, ``checkpoint``, or a TOML/JSON file; see `milr.models.janus_prompts`).
    """
    from milr.registry import get_registry

    registry = get_registry()
    name = str(name_or_path).strip()
    # passed only when set, so adapters written before these options keep loading
    extra: dict[str, Any] = {
        k: v
        for k, v in (
            ("allow_missing", allow_missing or None),
            ("prompt_style", prompt_style),
            ("prompt_file", prompt_file),
            ("revision", revision),
        )
        if v is not None
    }
    if not name:
        raise MilrUserError("empty model name; pass --model NAME_OR_PATH")
    adapter, sep, rest = name.partition(":")
    if sep and adapter in registry.generators and not Path(name).exists():
        cls = registry.generator_entry(adapter).cls
        return cls.from_pretrained(rest, device=device, dtype=dtype, **_fit(cls, extra, name))
    if name in registry.generators:
        cls = registry.generator_entry(name).cls
        if isinstance(cls, type) and issubclass(cls, NamedCheckpoint):
            return cls.from_pretrained(device=device, dtype=dtype, **_fit(cls.adapter, extra, name))
        if not cls.default_checkpoint:
            raise MilrUserError(f"generator {name!r} has no default checkpoint; pass a path")
        return cls.from_pretrained(
            cls.default_checkpoint, device=device, dtype=dtype, **_fit(cls, extra, name)
        )
    path = Path(name).expanduser()
    if path.is_dir():
        cls = _pick(registry, path)
        return cls.from_pretrained(path, device=device, dtype=dtype, **_fit(cls, extra, name))
    if path.exists():
        raise MilrUserError(f"model path {str(path)!r} is a file; pass the checkpoint directory")
    if _looks_local(name):
        raise MilrUserError(
            f"model path {name!r} does not exist; pass a checkpoint directory, a hub id "
            f"like deepseek-community/Janus-Pro-1B, or one of: "
            f"{', '.join(sorted(registry.generators))}"
        )
    cfg_dir = _hub_config_dir(name, revision)
    cls = _pick(registry, cfg_dir, label=name)
    return cls.from_pretrained(name, device=device, dtype=dtype, **_fit(cls, extra, name))


def _fit(cls: Any, extra: dict[str, Any], name: str) -> dict[str, Any]:
    """`extra` for `cls.from_pretrained`; ``revision`` for a loader that cannot take it is a
    one-line error (a local directory or a plugin adapter without Hub revisions)."""
    if "revision" not in extra:
        return extra
    try:
        params = inspect.signature(cls.from_pretrained).parameters
    except (TypeError, ValueError):
        return extra
    takes = "revision" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not takes:
        raise MilrUserError(
            f"--revision {extra['revision']!r} applies to Hub ids; model {name!r} is loaded by "
            f"{getattr(cls, 'name', cls.__name__)!r}, which takes no revision: drop --revision"
        )
    return extra


def _pick(registry: Any, path: Path, label: str | None = None) -> type[Generator]:
    for entry in registry.generators.values():
        try:
            if entry.cls.can_load(path):
                return entry.cls
        except Exception:  # a broken adapter must not hide the others
            continue
    found = _describe_dir(path)
    known = ", ".join(sorted(registry.generators)) or "(none)"
    raise MilrUserError(
        f"{label or str(path)!r} is not a checkpoint any generator adapter can load "
        f"(found: {found}); adapters: {known}"
    )


def _describe_dir(path: Path) -> str:
    cfg = path / "config.json"
    if cfg.is_file():
        import json

        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "an unreadable config.json"
        return f"config.json with model_type={data.get('model_type')!r}"
    try:
        names = sorted(p.name for p in path.iterdir())[:8]
    except OSError:
        names = []
    return f"no config.json; files: {', '.join(names) or '(empty directory)'}"


_LOADED: dict[tuple[str, str, str], Generator] = {}


def loaded_generator(name: str, device: str | None = None, dtype: str | None = None) -> Generator:
    """`load_generator` once per process and (name, device, dtype): later calls reuse it.

    `device` None/``auto`` is `milr.devices.run_device`'s choice (``cuda:LOCAL_RANK`` when
    CUDA is present, else CPU); bad spellings raise `MilrUserError` naming the value.
    """
    from milr.devices import resolve_dtype, run_device

    dev = run_device(device, who="device")
    key = (name, dev, str(resolve_dtype(dtype, dev, "dtype")))
    if key not in _LOADED:
        _LOADED[key] = load_generator(name, device=dev, dtype=dtype)
    return _LOADED[key]
