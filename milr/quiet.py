"""Keep third-party libraries from printing progress bars milr did not ask for.

transformers draws a "Loading weights" bar on every `from_pretrained`. milr downloads before
that, outside this switch (`milr.hub`), so huggingface_hub's download bars still show; milr's
own progress (`milr generate`'s step bar, `milr bench`) is plain tqdm and is not affected.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def library_progress_bars_off() -> Iterator[None]:
    """Switch transformers' and huggingface_hub's progress bars off for the block, then restore.

    Restores each library's previous setting, so a user who enabled or disabled them keeps
    their choice. Does nothing when transformers is not installed.
    """
    try:
        from huggingface_hub import utils as hub_utils
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    transformers_on = hf_logging.is_progress_bar_enabled()
    hub_off = hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if transformers_on:
            hf_logging.enable_progress_bar()  # also re-enables huggingface_hub's bars
        if hub_off:
            hub_utils.disable_progress_bars()
        else:
            hub_utils.enable_progress_bars()
