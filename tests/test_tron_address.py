"""Tron address conversions, cross-checked against real mainnet pairs and tronpy's independent implementation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tronpy.keys import to_base58check_address, to_hex_address

from chains.tron.address import (
    _ALPHABET,
    decode_base58,
    is_base58,
    to_base58,
    to_hex20,
    to_hex41,
    to_word,
    word_to_base58,
)

# (base58, 21-byte hex): mainnet contracts. USDT's pair is published in the reference; the others were
# computed with tronpy.keys and are re-checked against it below.
REAL_PAIRS = [
    ("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", "41a614f803b6fd780986a42c78ec9c7f77e6ded13c"),  # USDT
    ("TEkxiTehnzSmSe2XqrBj4w32RUN966rdz8", "413487b63d30b5b2c87fb7ffa8bcfade38eaac1abe"),  # USDC
    ("TNUC9Qb1rRpS5CbWLmNMxXBjyFoydXjWFR", "41891cdb91d149f23b1a45d9c5ca78a88d0cb44c18"),  # WTRX
    ("TCFLL5dx5ZJdKnWuesXxi1VPwjLVmWZZy9", "4118fd0626daf3af02389aef3ed87db9c33f638ffa"),  # JST
    ("T9yD14Nj9j7xAB4dbGeiX9h8unkKHxuWwb", "410000000000000000000000000000000000000000"),  # zero address
]


@pytest.mark.parametrize(("b58", "hex41"), REAL_PAIRS)
def test_real_pairs(b58: str, hex41: str) -> None:
    assert to_hex41(b58) == hex41
    assert to_base58(hex41) == b58
    assert to_base58(hex41.upper()) == b58
    assert to_base58("0x" + hex41) == b58
    assert to_hex20(b58) == hex41[2:]
    assert to_base58(hex41[2:]) == b58
    assert word_to_base58(to_word(b58)) == b58
    assert to_base58(bytes.fromhex(hex41)) == b58
    assert to_base58(bytes.fromhex(hex41[2:])) == b58
    # independent implementation
    assert to_hex_address(b58) == hex41
    assert to_base58check_address(hex41) == b58


def test_word_with_41_in_padding_takes_last_20_bytes() -> None:
    b58, hex41 = REAL_PAIRS[0]
    word = "0" * 22 + hex41  # 11 zero bytes, 0x41, 20 bytes: as seen in some TRC20 call data
    assert len(word) == 64
    assert word_to_base58(word) == b58
    assert to_base58(word) == b58
    assert word_to_base58("ff" * 12 + hex41[2:]) == b58


def test_base58_is_never_lowercased() -> None:
    b58 = REAL_PAIRS[0][0]
    assert to_base58(b58) == b58
    with pytest.raises(ValueError):
        to_base58(b58.lower())
    with pytest.raises(ValueError):
        to_base58(b58.upper())


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u", "checksum"),
        ("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6", "length"),
        ("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6tt", "length"),
        ("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6l", "character"),
        ("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj60", "character"),
        # a valid Bitcoin address: right checksum, version byte 0x00
        ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "prefix"),
        ("42a614f803b6fd780986a42c78ec9c7f77e6ded13c", "prefix"),
        ("a614f803b6fd780986a42c78ec9c7f77e6ded1", "length"),
        ("", "empty"),
    ],
)
def test_invalid_reasons(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        to_base58(value)
    assert not is_base58(value)


def test_non_string_rejected() -> None:
    with pytest.raises(ValueError):
        decode_base58(123)  # type: ignore[arg-type]


addresses20 = st.binary(min_size=20, max_size=20)


@given(addresses20)
def test_round_trips(raw: bytes) -> None:
    b58 = to_base58(raw)
    assert len(b58) == 34 and b58.startswith("T")
    assert is_base58(b58)
    assert to_hex20(b58) == raw.hex()
    assert to_hex41(b58) == "41" + raw.hex()
    assert to_base58(to_hex41(b58)) == b58
    assert to_base58(to_hex20(b58)) == b58
    assert word_to_base58(to_word(b58)) == b58
    assert to_base58check_address("41" + raw.hex()) == b58  # tronpy agrees


@settings(max_examples=300)
@given(addresses20, st.integers(min_value=0, max_value=33), st.integers(min_value=1, max_value=57))
def test_single_character_change_is_rejected(raw: bytes, pos: int, shift: int) -> None:
    b58 = to_base58(raw)
    changed_char = _ALPHABET[(_ALPHABET.index(b58[pos]) + shift) % 58]
    changed = b58[:pos] + changed_char + b58[pos + 1 :]
    assert changed != b58
    with pytest.raises(ValueError, match="checksum|length|prefix"):
        to_base58(changed)
