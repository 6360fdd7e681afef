"""The tensor cache's source fingerprint: a code edit retrains what it keys, a cosmetic one does not."""

from __future__ import annotations

from pathlib import Path


def test_source_fingerprint_ignores_comments_docstrings_and_annotations_but_not_code(tmp_path: Path) -> None:
    """An hour of cached baseline training must survive a type-hint or comment edit, and no code edit."""
    from models.data_cache import file_fingerprint

    base = 'def f(x):\n    return x + 1\n\nclass C:\n    n = 2\n'
    cosmetic = ('"""Module doc."""\n# a comment\ndef f(x: int) -> int:\n    """Why."""\n    return x + 1  # note\n\n'
                'class C:\n    """Doc."""\n    mean: object\n    n: int = 2\n')
    changed = 'def f(x):\n    return x + 2\n\nclass C:\n    n = 2\n'
    paths = []
    for i, text in enumerate((base, cosmetic, changed)):
        paths.append(tmp_path / f"m{i}.py")
        paths[-1].write_text(text)
    assert file_fingerprint(paths[0]) == file_fingerprint(paths[1])
    assert file_fingerprint(paths[0]) != file_fingerprint(paths[2])
