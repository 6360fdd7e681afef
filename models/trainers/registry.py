"""Trainer registry: `@register_trainer("renderbegan")`, `get_trainer(name)`, `list_trainers()`.

A registry instead of class-name strings so type checkers and readers can follow every trainer;
registering a name twice is an error rather than a silent override (torchvision `models/_api.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any])

_TRAINERS: dict[str, Callable[..., Any]] = {}
_CONFIGS: dict[str, type] = {}


def register_trainer(name: str, config: type | None = None) -> Callable[[T], T]:
    """Register `fn(cfg, run_dir, device="auto", resume=False, progress=None, domain=None) -> dict`
    (the result holds at least "status", "iteration" and "run_dir"); `config` is its config dataclass,
    which the generic `labelforge train METHOD` command builds from YAML and flags."""

    def wrap(fn: T) -> T:
        if name in _TRAINERS:
            raise ValueError(f"trainer '{name}' registered twice")
        _TRAINERS[name] = fn
        if config is not None:
            _CONFIGS[name] = config
        return fn

    return wrap


def load_builtin_trainers() -> None:
    """Import the built-in trainer modules so their trainers and run builders are registered."""
    import models.trainers.dcgan  # noqa: F401  (registers "dcgan", seed 004)
    import models.trainers.infobegan  # noqa: F401  (registers "infobegan", seed 002)
    import models.trainers.labelgan  # noqa: F401  (registers "labelgan", seed 001)
    import models.trainers.renderbegan  # noqa: F401  (registers "renderbegan")
    import models.trainers.simulator  # noqa: F401  (registers "simulator")
    import models.trainers.source_only  # noqa: F401  (registers "source-only")
    import models.trainers.synthvaegan  # noqa: F401  (registers "synthvaegan", seed 003)


def get_trainer(name: str) -> Callable[..., Any]:
    """The training entry point registered under `name`; unknown names list the known ones."""
    load_builtin_trainers()
    if name not in _TRAINERS:
        raise ValueError(f"unknown trainer '{name}'; known: {', '.join(sorted(_TRAINERS))}")
    return _TRAINERS[name]


def list_trainers() -> list[str]:
    load_builtin_trainers()
    return sorted(_TRAINERS)


def get_trainer_config(name: str) -> type:
    """The config dataclass a trainer was registered with."""
    get_trainer(name)  # unknown names fail with the list of known ones
    if name not in _CONFIGS:
        raise ValueError(f"trainer '{name}' was registered without a config class")
    return _CONFIGS[name]
