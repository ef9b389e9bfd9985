"""Generated sections of hand-written markdown (docs/benchmarks.md): a script owns the text between
`<!-- NAME:start -->` and `<!-- NAME:end -->` and rewrites only that, leaving the prose around it."""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(path: Path, name: str, body: str, heading: str) -> None:
    """Replace section `name` of the file at `path` with `body` (appended under `heading` if absent)."""
    start, end = markers(name)
    block = f"{start}\n\n{body.strip()}\n\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + f"\n\n{heading}\n\n{block}\n"
    path.write_text(text, encoding="utf-8")
