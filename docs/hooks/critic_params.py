"""mkdocs hook: ``<!-- milr-critic-params: NAME -->`` becomes NAME's parameter table.

The table is rendered from the critic's declared ``Params`` (`milr.params.parameters_markdown`),
so the docs cannot drift from the code. An unknown critic name fails the (strict) build.
"""

from __future__ import annotations

import re
from typing import Any

MARKER = re.compile(r"<!--\s*milr-critic-params:\s*([a-z0-9_-]+)\s*-->")


def render(markdown: str) -> str:
    from milr.params import parameters_markdown
    from milr.registry import get_registry

    registry = get_registry()
    return MARKER.sub(lambda m: parameters_markdown(registry.critic_entry(m.group(1)).cls), markdown)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return render(markdown)
