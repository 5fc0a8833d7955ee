"""C source text for the generated weights: comments, string and float literals, arrays."""

from __future__ import annotations

import numpy as np


def c_comment(text: str) -> str:
    """Text safe inside a C block comment, on one line."""
    return text.replace("*/", "* /").replace("\n", " ").replace("\r", " ")


def c_string(text: str) -> str:
    """A C string literal of `text` (escaped, no trigraphs, non-ASCII as octal UTF-8)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= ord(ch) < 127 and ch != "?":  # '?' could start a trigraph
            out.append(ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode("utf-8"))
    return '"' + "".join(out) + '"'


def c_float(value: float) -> str:
    """Exact float32 literal (hex float, C99)."""
    return float(np.float32(value)).hex() + "f"


def c_array(ctype: str, name: str, values: np.ndarray, fmt: str, per_line: int) -> str:
    """A const C array definition, `per_line` values (formatted with `fmt`) per line."""
    items = [fmt.format(int(v)) for v in values.reshape(-1)]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(lines)
    return f"const {ctype} {name}[{len(items)}] = {{\n    {body}\n}};\n"
