"""One file per distinct shader. Different profiles can render the same program: chrome and edge
share the workgroup size and every tile, so their WGSL differs only in the header comments that
name the profile and the variant key. The bundle stores each distinct program once, in a file named
by its content, and the manifest maps every variant key (one per profile) to its file.

What is compared and what is stored is one text, `code_of(render(variant))`: the program without
its comments (WGSL's `//` line comments and nested `/* */` block comments), trailing blanks and
empty lines, under a one-line header naming the template. So equal programs are byte-identical
files by construction, whatever the templates' comments say, and no comment can name a profile.
The comments explain the code where it is written, in templates/ (the header says which); in the
bundle they were a fifth of the WGSL bytes, and 45% of them once gzip-compressed (the ViT bundle),
since prose compresses worse than the repetitive code.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ulpq_build.kernels import KernelVariant, render

# WGSL's line breaks (the spec's "blankspace" line-break code points): a `//` comment ends at any.
_LINE_BREAKS = "\n\v\f\r\x85\u2028\u2029"
HASH_CHARS = 16  # of the sha256 in a file's name: 64 bits, no collision among a bundle's few hundred files


def strip_comments(text: str) -> str:
    """`text` without its comments: a `//` comment is removed up to its line break, a `/* */` block
    (nesting, as WGSL allows) is replaced by a space, or by its line breaks when it spans lines, so
    tokens stay apart and lines stay lines. WGSL has no string literals, so no comment marker is
    ever quoted. An unterminated block comment is invalid WGSL: ValueError."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            while i < n and text[i] not in _LINE_BREAKS:
                i += 1
        elif text.startswith("/*", i):
            depth, start, i = 1, i, i + 2
            while depth:
                if i >= n:
                    raise ValueError(f"unterminated /* comment at character {start}")
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            breaks = "".join(c for c in text[start:i] if c in _LINE_BREAKS)
            out.append(breaks or " ")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def code_of(text: str) -> str:
    """The program a WGSL text holds, for comparing: comments removed, each line's trailing blanks
    and every empty line dropped (none of which changes a WGSL program)."""
    lines = (line.rstrip() for line in re.split(r"\r\n|[\n\v\f\r\x85\u2028\u2029]", strip_comments(text)))
    return "\n".join(line for line in lines if line) + "\n"


def stored_text(code: str, templates: list[str]) -> str:
    """A shader file's text: the header, then the program (`code_of`)."""
    return (f"// ulpq_build shader from templates/{', templates/'.join(templates)}, comments removed (the template "
            f"explains the code); manifest.json's shaders list the kernel variants that run it\n{code}")


@dataclass(frozen=True)
class ShaderFile:
    file: str  # relative to the bundle: shaders/<kernel>-<sha256 prefix>.wgsl
    text: str
    sha256: str
    keys: tuple[str, ...]  # the variant keys it serves, sorted

    @property
    def data(self) -> bytes:
        return self.text.encode("utf-8")


def distinct_shaders(variants: list[KernelVariant]) -> tuple[list[ShaderFile], dict[str, str]]:
    """(files, key -> file) for `variants`: variants whose program (code_of) is equal share one file."""
    groups: dict[str, list[KernelVariant]] = {}
    for variant in sorted(variants, key=lambda v: v.key):
        groups.setdefault(code_of(render(variant)), []).append(variant)
    files, file_of = [], {}
    for code, members in groups.items():
        text = stored_text(code, sorted({v.spec.template for v in members}))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        kernels = "-".join(sorted({v.kernel for v in members}))  # one kernel, unless two render alike
        name = f"shaders/{kernels}-{digest[:HASH_CHARS]}.wgsl"
        keys = tuple(v.key for v in members)
        files.append(ShaderFile(name, text, digest, keys))
        file_of.update((key, name) for key in keys)
    if len({f.file for f in files}) != len(files):  # two programs whose texts share 64 bits of sha256
        raise RuntimeError("two distinct shaders got the same file name; raise HASH_CHARS")
    return sorted(files, key=lambda f: f.file), file_of
