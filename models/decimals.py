"""Rows of numbers as JSON text, formatted for a whole batch at once with numpy.

Why: each sample's `.json` carries its labels in human units (a face has ~400 numbers), and
`json.dumps` spends ~0.7 µs per float on the shortest round-trip repr while holding the GIL — the
engine's largest per-sample cost. Rounded to a fixed number of decimals, a float is an integer k
with its decimal point moved, so its digits can be cut out of k with vectorised arithmetic and a
digit table for every number of a batch together.

The text of a value is `repr(np.round(x, decimals))` (so `json.loads` gives back exactly the
rounded values) whenever that repr is positional, i.e. |rounded| ≥ 1e-4 or 0; smaller magnitudes
come out positional too (`0.00005`, not `5e-05`), and a negative value that rounds to zero is `0.0`.
Batches holding a value of 1e9 or more, inf or NaN are written with `repr` itself.
"""

from __future__ import annotations

import numpy as np

_LIMIT = 1e9  # integer parts below this fit int32, and float division by 10^decimals stays exact
_DIGITS3 = np.array([list(f"{i:03d}".encode()) for i in range(1000)], dtype=np.uint8)  # [1000, 3]
_TRAILING0 = np.array([3 if i == 0 else len(str(i)) - len(str(i).rstrip("0")) for i in range(1000)],
                      dtype=np.int32)  # zeros at the end of i as 3 digits


def decimal_rows(values: np.ndarray, decimals: int = 6) -> list[bytes]:
    """[B, n] numbers → B byte strings `v0,v1,…`, each value rounded to `decimals` (≤ 6) places."""
    x = np.asarray(values, dtype=np.float64)
    assert x.ndim == 2 and 1 <= decimals <= 6, (x.shape, decimals)
    rows, n = x.shape
    if n == 0:
        return [b""] * rows
    scale = 10.0**decimals
    k = np.rint(x.ravel() * scale)  # [N] the rounded value times 10^decimals, exactly (np.round's step)
    a = np.abs(k)
    if not np.all(a < _LIMIT * scale):  # also false for NaN
        return [",".join(repr(v) for v in row).encode() for row in (k.reshape(rows, n) / scale).tolist()]
    ip = np.floor(a / scale)  # integer part (exact: a is an integer < 2^53)
    fp = (a - ip * scale).astype(np.int32) * 10 ** (6 - decimals)  # fraction as 6 digits
    ip_i = ip.astype(np.int32)
    int_width = len(str(int(ip_i.max())))
    # One plane per character column ([W, N]: long contiguous loops), transposed once at the end.
    width = 1 + int_width + 1 + 6 + 1  # sign, integer digits, point, fraction, comma
    text = np.empty((width, k.size), dtype=np.uint8)
    keep = np.ones((width, k.size), dtype=bool)
    text[0] = ord("-")
    np.less(k, 0, out=keep[0])
    for j in range(int_width):  # integer part without leading zeros (the units digit always)
        p = 10 ** (int_width - 1 - j)
        text[1 + j] = ord("0") + (ip_i // p) % 10
        if p > 1:
            np.greater_equal(ip_i, p, out=keep[1 + j])
    point = 1 + int_width
    text[point] = ord(".")
    hi, lo = np.divmod(fp, 1000)
    text[point + 1:point + 4] = _DIGITS3[hi].T
    text[point + 4:point + 7] = _DIGITS3[lo].T
    digits = 6 - np.where(lo == 0, 3 + _TRAILING0[hi], _TRAILING0[lo])  # fraction without trailing zeros
    for j in range(1, 6):  # (the first fraction digit always)
        np.greater(digits, j, out=keep[point + 1 + j])
    text[-1] = ord(",")
    text_t, keep_t = np.ascontiguousarray(text.T), np.ascontiguousarray(keep.T)  # [N, W]
    flat = text_t[keep_t]  # row-major: row 0's numbers, then row 1's …
    ends = np.cumsum(keep_t.reshape(rows, -1).sum(axis=1)).tolist()
    return [flat[s:e - 1].tobytes() for s, e in zip([0, *ends[:-1]], ends, strict=True)]  # no last comma
