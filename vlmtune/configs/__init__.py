"""The shipped recipes: YAML configs named by their path below this folder, without `.yaml`.

    names()                        -> ["assistant/qwen2.5-0.5b_qlora", ..., "llava-1.5/7b_lora", ...]
    read_text("llava-1.5/7b_lora") -> the YAML, comments included

Each file opens with a one-line description and its own launch command (torchtune style).
Read through importlib.resources, so they work from a wheel as well as from a checkout.
"""

from __future__ import annotations

import difflib
from importlib.resources import files
from typing import TYPE_CHECKING

from vlmtune.errors import VlmtuneError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python >= 3.11; only for the annotations

SUFFIX = ".yaml"


def _root() -> Traversable:
    return files(__name__)


def _walk(folder: Traversable, prefix: str = ""):
    for entry in folder.iterdir():
        if entry.is_dir():
            yield from _walk(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(SUFFIX):
            yield prefix + entry.name[: -len(SUFFIX)], entry


def names() -> list[str]:
    """Every shipped config name, sorted."""
    return sorted(name for name, _ in _walk(_root()))


def close_matches(name: str) -> list[str]:
    """Shipped names that look like `name`: near spellings first, then names containing it."""
    known = names()
    out = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    out += [k for k in known if name.lower() in k.lower() and k not in out]
    return out[:5]


def find(name: str) -> Traversable:
    """The resource for a shipped name (a trailing `.yaml` is allowed); VlmtuneError listing close matches if none."""
    key = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    for known, entry in _walk(_root()):
        if known == key:
            return entry
    close = close_matches(key)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise VlmtuneError(f"no shipped config named {name!r}.{hint} See `vlmtune configs list`.")


def read_text(name: str) -> str:
    return find(name).read_text(encoding="utf-8")


def describe(text: str) -> str:
    """The one-line description: the first comment line of a config."""
    for line in text.splitlines():
        if line.startswith("#") and line.strip("# ").strip():
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""
