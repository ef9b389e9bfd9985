"""Declared schemas for the structured inputs the tool reads (safetensors headers, Hugging Face
config and side files, quantization configs, bundle manifests, checkpoint metadata).

A reader states what it accepts (types, ranges, finite numbers, nesting depth) as a schema value,
and `validate` turns any mismatch into one UserError line naming the file, the field and what to
do, so no reader checks fields at their use sites. JSON and TOML text are parsed through
`parse_json` / `parse_toml`, which bound the nesting depth before the parser sees the text (a
recursive parser would otherwise hit RecursionError), refuse NaN / Infinity / numbers that
overflow, and report invalid UTF-8 as such.

    MANIFEST = Obj({"name": Str(), "shape": List(Int(min=0), max_len=8)}, optional={"note"})
    data = validate(parse_json(raw, path, advice), MANIFEST, path, advice)
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ulpq_build.errors import UserError

MAX_DEPTH = 64  # no input the tool reads nests deeper than ~6; 64 leaves room and stays far from Python's stack
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


class Invalid(Exception):
    """A schema mismatch at `at` (a dotted field path); readers turn it into a UserError."""

    def __init__(self, at: str, what: str):
        super().__init__(f"{at}: {what}" if at else what)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(source, what: str, advice: str) -> UserError:
    """The one-line error for input `source`."""
    return UserError(_one_line(f"{source}: {what}; {advice}"))


# --- parsing ---------------------------------------------------------------------------------------

def nesting_depth(raw: bytes) -> int:
    """The deepest bracket nesting of JSON-like text, strings skipped; linear time, no recursion."""
    stripped = _STRING.sub(b'""', raw)
    arr = np.frombuffer(stripped, dtype=np.uint8)
    steps = (np.isin(arr, (ord("["), ord("{"))).astype(np.int64) - np.isin(arr, (ord("]"), ord("}"))).astype(np.int64))
    return int(np.cumsum(steps).max(initial=0))


def _decode(raw: bytes | str, source, advice: str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(source, f"not valid UTF-8 (byte {exc.start})", advice) from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _shallow_text(raw: bytes | str, source, advice: str, max_depth: int) -> str:
    """The decoded text, once its nesting is known to stay within max_depth (checked before any
    parser recurses into it)."""
    text = _decode(raw, source, advice)
    depth = nesting_depth(text.encode("utf-8", "surrogatepass"))
    if depth > max_depth:
        raise fail(source, f"nested {depth} levels deep (at most {max_depth} allowed)", advice)
    return text


def parse_json(raw: bytes | str, source, advice: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """JSON text -> Python values, with one-line errors naming `source`."""
    text = _shallow_text(raw, source, advice, max_depth)
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge integers, NaN, 1e400
        raise fail(source, f"not valid JSON ({_one_line(exc)[:160]})", advice) from None


def parse_toml(raw: bytes | str, source, advice: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """TOML text -> Python values; NaN and infinities are refused like in JSON."""
    text = _shallow_text(raw, source, advice, max_depth)
    try:
        data = tomllib.loads(text, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError is a ValueError
        raise fail(source, f"not valid TOML ({_one_line(exc)[:160]})", advice) from None
    return data


# --- schemas ---------------------------------------------------------------------------------------

class Schema:
    def check(self, value, at: str):
        raise NotImplementedError


def _kind(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


@dataclass
class Int(Schema):
    min: int | None = None
    max: int | None = None

    def check(self, value, at):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(at, f"expected an integer, got {_kind(value)}")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise Invalid(at, f"{value} is outside [{self.min}, {self.max}]")
        return value


@dataclass
class Float(Schema):
    """A finite number (integers accepted) within [min, max]; `positive` excludes 0."""

    min: float | None = None
    max: float | None = None
    positive: bool = False

    def check(self, value, at):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(at, f"expected a number, got {_kind(value)}")
        try:
            value = float(value)
        except OverflowError:
            raise Invalid(at, "number out of range") from None
        if not math.isfinite(value):
            raise Invalid(at, f"{value} is not a finite number")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max) or \
                (self.positive and value <= 0):
            bounds = f"({0 if self.positive else self.min}, {self.max}]" if self.positive else f"[{self.min}, {self.max}]"
            raise Invalid(at, f"{value} is outside {bounds}")
        return value


@dataclass
class Bool(Schema):
    """true or false only: "false" (a string) or 0 is refused, never taken as truthy."""

    def check(self, value, at):
        if not isinstance(value, bool):
            raise Invalid(at, f"expected true or false, got {value!r:.40}")
        return value


@dataclass
class Str(Schema):
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    max_len: int = 4096

    def check(self, value, at):
        if not isinstance(value, str):
            raise Invalid(at, f"expected a string, got {_kind(value)}")
        if len(value) > self.max_len:
            raise Invalid(at, f"string longer than {self.max_len} characters")
        if self.choices is not None and value not in self.choices:
            raise Invalid(at, f"{value!r:.60} is not one of {', '.join(self.choices)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise Invalid(at, f"{value!r:.60} is not of the expected form")
        return value


@dataclass
class List(Schema):
    item: Schema
    min_len: int = 0
    max_len: int | None = None

    def check(self, value, at):
        if not isinstance(value, list):
            raise Invalid(at, f"expected a list, got {_kind(value)}")
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            raise Invalid(at, f"a list of {len(value)} items, expected {self.min_len} to {self.max_len}")
        return [self.item.check(v, f"{at}[{i}]") for i, v in enumerate(value)]


@dataclass
class Map(Schema):
    """An object with any string keys, every value of one schema."""

    value: Schema
    max_len: int | None = None

    def check(self, value, at):
        if not isinstance(value, dict):
            raise Invalid(at, f"expected an object, got {_kind(value)}")
        if self.max_len is not None and len(value) > self.max_len:
            raise Invalid(at, f"more than {self.max_len} entries")
        return {k: self.value.check(v, f"{at}.{k}" if at else str(k)) for k, v in value.items()}


@dataclass
class Obj(Schema):
    """An object with declared fields: all required unless listed in `optional`; unknown keys are
    kept (extra="allow"), dropped silently (extra="ignore") or refused (extra="forbid")."""

    fields: dict[str, Schema]
    optional: set[str] = field(default_factory=set)
    extra: str = "allow"

    def check(self, value, at):
        if not isinstance(value, dict):
            raise Invalid(at, f"expected an object, got {_kind(value)}")
        out = {}
        for key, schema in self.fields.items():
            where = f"{at}.{key}" if at else key
            if key in value:
                out[key] = schema.check(value[key], where)
            elif key not in self.optional:
                raise Invalid(at, f"missing key {key!r}")
        for key in value:
            if key not in self.fields:
                if self.extra == "forbid":
                    raise Invalid(at, f"unknown option {key!r:.60}; known: {', '.join(sorted(self.fields))}")
                if self.extra == "allow":
                    out[key] = value[key]
        return out


@dataclass
class Nullable(Schema):
    inner: Schema

    def check(self, value, at):
        return None if value is None else self.inner.check(value, at)


@dataclass
class AnyOf(Schema):
    options: tuple[Schema, ...]
    what: str

    def check(self, value, at):
        for option in self.options:
            try:
                return option.check(value, at)
            except Invalid:
                continue
        raise Invalid(at, f"expected {self.what}, got {value!r:.40}")


@dataclass
class Anything(Schema):
    def check(self, value, at):
        return value


SHA256 = Str(pattern=r"[0-9a-f]{64}")
# A file inside a bundle: relative, no '..', no backslashes, no hidden names.
REL_PATH = Str(pattern=r"(?:[A-Za-z0-9_][A-Za-z0-9_.+-]*/)*[A-Za-z0-9_][A-Za-z0-9_.+-]*", max_len=255)


def validate(value, schema: Schema, source, advice: str):
    """`value` checked against `schema`, or a one-line UserError naming `source` and the field."""
    try:
        return schema.check(value, "")
    except Invalid as exc:
        raise fail(source, str(exc), advice) from None
