"""The registry: derived constants and the costs it states."""

import pytest

from ulpq_build.errors import UserError
from ulpq_build.formats import FORMATS, Format, get_format
from ulpq_build.quantspec import QuantSpec, bits_per_weight

EXPECTED = {  # name: (bits, values per word or 0 for the stream, code bits per value)
    "int8": (8, 4, 8.0), "int4": (4, 8, 4.0), "int3": (3, 10, 3.2), "int3-dense": (3, 0, 3.0),
    "int2": (2, 16, 2.0), "int2-4values": (2, 16, 2.0), "int2-ternary": (2, 16, 2.0), "int2-optimal": (2, 16, 2.0),
    "int3-optimal": (3, 10, 3.2), "int4-optimal": (4, 8, 4.0), "int1": (1, 32, 1.0),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_derived_constants(name):
    fmt = FORMATS[name]
    bits, vpw, code_bits = EXPECTED[name]
    assert (fmt.bits, fmt.values_per_word, fmt.code_bits_per_value) == (bits, vpw, pytest.approx(code_bits))
    assert fmt.block_values * fmt.bits <= fmt.block_words * 32


def test_value_sets():
    assert FORMATS["int2-4values"].table == (-1.0, 0.0, 0.5, 1.0)
    assert FORMATS["int2-ternary"].table == pytest.approx((-1.0, -1 / 3, 1 / 3, 1.0))
    assert FORMATS["int1"].table == (-1.0, 1.0) and FORMATS["int1"].scale_rule == "mean-abs"


def test_bits_per_weight_counts_scales_and_codebooks():
    shape = (768, 768)
    assert bits_per_weight(QuantSpec("int4"), shape) == pytest.approx(4 + 32 / 768)
    assert bits_per_weight(QuantSpec("int4", group_size=32), shape) == pytest.approx(4 + 1)
    assert bits_per_weight(QuantSpec("int4", group_size=32, scale_dtype="float16"), shape) == pytest.approx(4.5)
    assert bits_per_weight(QuantSpec("int4", group_size=64, asymmetric=True), shape) == pytest.approx(4 + 0.5 + 0.125)
    assert bits_per_weight(QuantSpec("int3-dense"), shape) == pytest.approx(3 + 32 / 768)
    assert bits_per_weight(QuantSpec("int2-optimal"), shape) == pytest.approx(2 + 32 / 768 + 4 * 32 / 768**2)


def test_unknown_format_is_a_user_error():
    with pytest.raises(UserError, match="unknown format 'int5'.*int8"):
        get_format("int5")


def test_bad_rows_are_rejected_at_import_time():
    with pytest.raises(ValueError):
        Format("bad", 2, "words", "table", "x", table=(-1.0, 0.0, 1.0))  # 3 levels for 2 bits
    with pytest.raises(ValueError):
        Format("bad", 9, "words", "uniform", "x")
