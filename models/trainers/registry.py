"""Trainer registry: `@register_trainer("renderbegan")`, `get_trainer(name)`, `list_trainers()`.

A registry instead of class-name strings so type checkers and readers can follow every trainer;
registering a name twice is an error rather than a silent override (torchvision `models/_api.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any])

_TRAINERS: dict[str, Callable[..., Any]] = {}


def register_trainer(name: str) -> Callable[[T], T]:
    def wrap(fn: T) -> T:
        if name in _TRAINERS:
            raise ValueError(f"trainer '{name}' registered twice")
        _TRAINERS[name] = fn
        return fn

    return wrap


def load_builtin_trainers() -> None:
    """Import the built-in trainer modules so their trainers and run builders are registered."""
    import models.trainers.renderbegan  # noqa: F401  (registers "renderbegan")
    import models.trainers.simulator  # noqa: F401  (registers "simulator")


def get_trainer(name: str) -> Callable[..., Any]:
    """The training entry point registered under `name`; unknown names list the known ones."""
    load_builtin_trainers()
    if name not in _TRAINERS:
        raise ValueError(f"unknown trainer '{name}'; known: {', '.join(sorted(_TRAINERS))}")
    return _TRAINERS[name]


def list_trainers() -> list[str]:
    load_builtin_trainers()
    return sorted(_TRAINERS)
