"""A disk cache for generated tensors (e.g. the faces-m real pools), so they are rendered once per machine.

Entries are plain `torch.save` files of a dict of tensors, loaded with `weights_only=True` (no code is
ever executed to load data) and written atomically (temporary file, then rename) so a crash or two
processes racing never leave a half-written entry behind.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CACHE_ENV = "LABELFORGE_CACHE_DIR"


def cache_dir() -> Path:
    """`$LABELFORGE_CACHE_DIR`, or `~/.cache/labelforge` on a laptop."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "labelforge")


def cache_key(**parts: object) -> str:
    """A short stable hash of JSON-able key parts (sizes, seeds, counts, versions)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def file_fingerprint(*paths: str | Path) -> str:
    """A 'version' of source files that changes whenever their code does: sha256 over each Python file's
    syntax tree without comments, docstrings and type annotations (editing those must not throw away a
    cache that took an hour of CPU to fill), over the bytes of any other file."""
    digest = hashlib.sha256()
    for path in paths:
        data = Path(path).read_bytes()
        digest.update(_code_only(data).encode() if str(path).endswith(".py") else data)
    return digest.hexdigest()[:16]


class _StripNonCode(ast.NodeTransformer):
    """Drops docstrings and annotations; a bare annotated name (`x: int`) declares nothing and goes too."""

    def _body(self, node: ast.AST) -> ast.AST:
        body = getattr(node, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
        self.generic_visit(node)
        return node

    def visit_Module(self, node: ast.Module) -> ast.AST:
        return self._body(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        return self._body(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.returns = None
        return self._body(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        node.returns = None
        return self._body(node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.annotation = None
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | None:
        if node.value is None:
            return None
        return ast.Assign(targets=[node.target], value=self.visit(node.value))


def _code_only(source: bytes) -> str:
    """The dump of a module's syntax tree with the non-code parts dropped (the bytes' text if it won't parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source.decode(errors="replace")
    return ast.dump(_StripNonCode().visit(tree))


def load_or_build(
    kind: str, key: str, build: Callable[[], dict[str, torch.Tensor]], root: Path | None = None
) -> dict[str, torch.Tensor]:
    """The cached tensors for (`kind`, `key`), building and saving them on a miss."""
    path = (root or cache_dir()) / kind / f"{key}.pt"
    if path.exists():
        log.info("cache hit %s", path)
        return torch.load(path, map_location="cpu", weights_only=True)
    tensors = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(tensors, tmp)
    tmp.replace(path)
    log.info("cached %s", path)
    return tensors
