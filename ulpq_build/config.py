"""Quantization configs (JSON or TOML), in the option names users of the original SDK know, plus
explicit rules. A config resolves to a default spec and an ordered rule list; `plan.py` applies
them (first match wins: explicit rules, then the mixedPrecision roles, then the default).

    bitsPerWeight = 4                 # or: format = "int4-optimal"
    perChannelQuantization = true     # false: one scale per tensor; or groupSize = 32
    symmetricQuantization = true      # false: zero points (uniform formats)
    distributeOptimalValues = false   # true: levels fitted to each tensor (-optimal formats)
    scaleDtype = "float32"            # or "float16"
    codebook = "tensor"               # -optimal formats: "tensor" or "channel"

    [mixedPrecision]                  # bits (or a format name) per role, matrices only
    embeddingBits = 8
    firstLayerBits = 8
    lastLayerBits = 8
    attentionBits = 4
    feedForwardBits = 4

    [[rules]]                         # ordered glob patterns on tensor names
    pattern = "encoder.layer.*.attention.self.*.weight"
    format = "int8"
    groupSize = 32
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ulpq_build.errors import UserError
from ulpq_build.formats import format_for_bits, get_format
from ulpq_build.plan import Rule, is_matrix
from ulpq_build.quantspec import PER_TENSOR, SCALE_DTYPES, QuantSpec
from ulpq_build.schema import AnyOf, Bool, Int, List, Obj, Str, parse_json, parse_toml, validate
from ulpq_build.roles import tensor_roles

ROLE_KEYS = {"embeddingBits": "embedding", "firstLayerBits": "first_layer", "lastLayerBits": "last_layer",
             "attentionBits": "attention", "feedForwardBits": "feed_forward"}
ADVICE = "fix the config (see the README's quantization config section)"
MAX_RULES = 10_000

# The config as declared: every option's type; values are checked against each other afterwards
# (QuantSpec.validate). Booleans are strict: "false" (a string) is refused, never taken as true.
_BITS_OR_FORMAT = AnyOf((Int(min=0, max=64), Str(max_len=64)), "a bit width (8, 4, 3, 2, 1) or a format name")
_GROUP = Int(min=-1, max=1 << 20)
_SCALE = Str(choices=tuple(SCALE_DTYPES))
_CODEBOOK = Str(choices=("tensor", "channel"))
RULE = Obj({"pattern": Str(max_len=1024), "format": _BITS_OR_FORMAT, "bits": _BITS_OR_FORMAT, "groupSize": _GROUP,
            "asymmetric": Bool(), "scaleDtype": _SCALE, "codebook": _CODEBOOK},
           optional={"format", "bits", "groupSize", "asymmetric", "scaleDtype", "codebook"}, extra="forbid")
MIXED = Obj({key: _BITS_OR_FORMAT for key in ROLE_KEYS}, optional=set(ROLE_KEYS), extra="forbid")
CONFIG = Obj({"bitsPerWeight": _BITS_OR_FORMAT, "format": _BITS_OR_FORMAT, "perChannelQuantization": Bool(),
              "groupSize": _GROUP, "symmetricQuantization": Bool(), "distributeOptimalValues": Bool(),
              "scaleDtype": _SCALE, "codebook": _CODEBOOK, "mixedPrecision": MIXED,
              "rules": List(RULE, max_len=MAX_RULES)},
             optional={"bitsPerWeight", "format", "perChannelQuantization", "groupSize", "symmetricQuantization",
                       "distributeOptimalValues", "scaleDtype", "codebook", "mixedPrecision", "rules"}, extra="forbid")
MAX_CONFIG_BYTES = 16 << 20


def read_config(path: Path) -> dict:
    """The config at `path`, parsed and checked against CONFIG, or a one-line UserError."""
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise UserError(f"{path}: unknown config format {path.suffix!r}; use a .json or .toml file")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UserError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB, not a quantization config")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; --config takes a .json or .toml file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc}); pass a readable config file") from None
    parse = parse_toml if path.suffix == ".toml" else parse_json
    data = parse(raw, path, "fix the syntax")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a table / object at the top; {ADVICE}")
    return validate(data, CONFIG, path, ADVICE)


def _format_of(value, optimal: bool, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UserError(f"{where}: expected a bit width (8, 4, 3, 2, 1) or a format name, got {value!r:.40}")
    if isinstance(value, str):
        return get_format(value, source=where).name
    return format_for_bits(value, optimal=optimal, source=where).name


def default_spec(config: dict, where: str) -> QuantSpec:
    config = validate(config, CONFIG, where, ADVICE)
    optimal = config.get("distributeOptimalValues", False)
    spec = QuantSpec()
    if "format" in config:
        spec = replace(spec, format=_format_of(config["format"], optimal, f"{where}: format"))
    elif "bitsPerWeight" in config:
        spec = replace(spec, format=_format_of(config["bitsPerWeight"], optimal, f"{where}: bitsPerWeight"))
    elif optimal:
        spec = replace(spec, format=_format_of(4, True, where))
    if "groupSize" in config:
        spec = replace(spec, group_size=config["groupSize"])
    elif config.get("perChannelQuantization") is False:
        spec = replace(spec, group_size=PER_TENSOR)
    if "symmetricQuantization" in config:
        spec = replace(spec, asymmetric=not config["symmetricQuantization"])
    if "scaleDtype" in config:
        spec = replace(spec, scale_dtype=config["scaleDtype"])
    if "codebook" in config:
        spec = replace(spec, codebook=config["codebook"])
    return spec


def _spec_for(value_format: str, base: QuantSpec, overrides: dict, where: str) -> QuantSpec:
    """The base spec with another format and a rule's own options. A global
    symmetricQuantization = false reaches only formats that can take zero points; a rule that
    asks for them on another format is an error (validate says why)."""
    fmt = get_format(value_format, source=where)
    asymmetric = overrides.get("asymmetric", base.asymmetric and fmt.supports_asymmetric)
    spec = replace(base, format=fmt.name, group_size=overrides.get("groupSize", base.group_size),
                   asymmetric=bool(asymmetric), scale_dtype=overrides.get("scaleDtype", base.scale_dtype),
                   codebook=overrides.get("codebook", base.codebook))
    return spec.validate(where)


def config_rules(config: dict, base: QuantSpec, tensors: list[tuple[str, tuple[int, ...], str]], where: str) -> list[Rule]:
    """The config's explicit rules, then its mixedPrecision roles, as an ordered rule list."""
    config = validate(config, CONFIG, where, ADVICE)
    optimal = config.get("distributeOptimalValues", False)
    rules = []
    for i, rule in enumerate(config.get("rules", [])):
        at = f"{where}: rules[{i}]"
        if "format" not in rule and "bits" not in rule:
            raise UserError(f"{at}: give the rule a 'format' (or 'bits')")
        fmt = _format_of(rule.get("format", rule.get("bits")), optimal, at)
        rules.append(Rule(str(rule["pattern"]), _spec_for(fmt, base, rule, at), at))
    mixed = config.get("mixedPrecision", {})
    matrices = [name for name, shape, dtype in tensors if is_matrix(shape, dtype)]
    roles = tensor_roles(matrices)
    for key, role in ROLE_KEYS.items():
        if key not in mixed:
            continue
        at = f"{where}: mixedPrecision.{key}"
        names = frozenset(n for n in matrices if role in roles[n])
        rules.append(Rule(f"<{role}>", _spec_for(_format_of(mixed[key], optimal, at), base, {}, at), at, names))
    return rules


def resolve_options(config_path: Path | None, overrides: dict, tensors: list[tuple[str, tuple[int, ...], str]]
                    ) -> tuple[QuantSpec, list[Rule]]:
    """The default spec and rules from a config (if any) with command-line `overrides` (QuantSpec
    fields the user gave explicitly) applied to the default before the rules are derived from it."""
    config = read_config(config_path) if config_path else {}
    where = str(config_path) if config_path else "command line"
    base = default_spec(config, where) if config else QuantSpec()
    base = replace(base, **overrides).validate("command line" if overrides else where)
    return base, config_rules(config, base, tensors, where) if config else []
