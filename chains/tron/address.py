"""Tron addresses: base58check ``T...``, the 21-byte hex ``41...`` form and the 20-byte hex form of logs.

Forms handled:

* base58check (the stored, normalised form): ``base58(0x41 || 20 bytes || checksum)``, 34 characters starting
  ``T``; checksum = first 4 bytes of double SHA-256 of the 21-byte payload. Case-sensitive: never lowercased.
* 21-byte hex, ``41`` + 40 hex digits: what the HTTP API returns with ``visible=false`` (``raw_data``,
  ``contract_address`` of transaction infos, ``getaccount``).
* 20-byte hex, 40 hex digits: the EVM form used by the TVM, in ``log.address`` and in topics.
* a 32-byte ABI word (topics, call data): the address is the **last** 20 bytes; the padding is not checked
  because TRC20 call data sometimes carries the ``41`` byte in it.

Every conversion validates its input and raises ``ValueError`` with the reason (bad checksum, wrong prefix,
wrong length, bad character). Hex output is lowercase without ``0x``; a ``0x`` prefix is accepted on input.
"""

from __future__ import annotations

import hashlib

PREFIX = 0x41
_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_HEX = frozenset("0123456789abcdefABCDEF")


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_ALPHABET[rem])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    n = 0
    for pos, char in enumerate(text):
        digit = _INDEX.get(char)
        if digit is None:
            raise ValueError(f"invalid base58 character {char!r} at position {pos}")
        n = n * 58 + digit
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def _strip_0x(text: str) -> str:
    return text[2:] if text[:2] in ("0x", "0X") else text


def _parse_hex(text: str, what: str) -> bytes:
    if not text or any(c not in _HEX for c in text):
        raise ValueError(f"{what}: not a hex string")
    if len(text) % 2:
        raise ValueError(f"{what}: odd number of hex digits ({len(text)})")
    return bytes.fromhex(text)


def decode_base58(address: str) -> bytes:
    """The 21-byte payload (``0x41`` + 20 bytes) of a base58check address, validated."""
    if not isinstance(address, str):
        raise ValueError(f"Tron address must be a string, got {type(address).__name__}")
    if not address:
        raise ValueError("empty Tron address")
    if len(address) != 34:
        raise ValueError(f"wrong length: a base58 Tron address has 34 characters, got {len(address)}")
    raw = _b58decode(address)
    if len(raw) != 25:
        raise ValueError(f"wrong length: decodes to {len(raw)} bytes, expected 25 (21 + 4-byte checksum)")
    payload, check = raw[:21], raw[21:]
    if _checksum(payload) != check:
        raise ValueError("bad checksum: the base58check checksum does not match (typo in the address?)")
    if payload[0] != PREFIX:
        raise ValueError(f"wrong prefix: version byte 0x{payload[0]:02x}, Tron addresses use 0x41")
    return payload


def encode_base58(payload21: bytes) -> str:
    """base58check of a 21-byte ``0x41``-prefixed payload."""
    if len(payload21) != 21:
        raise ValueError(f"wrong length: a Tron address payload has 21 bytes, got {len(payload21)}")
    if payload21[0] != PREFIX:
        raise ValueError(f"wrong prefix: version byte 0x{payload21[0]:02x}, Tron addresses use 0x41")
    return _b58encode(payload21 + _checksum(payload21))


def _payload(address: str | bytes) -> bytes:
    """21-byte payload of any accepted form."""
    if isinstance(address, bytes | bytearray):
        raw = bytes(address)
        if len(raw) == 20:
            return bytes([PREFIX]) + raw
        if len(raw) == 21:
            if raw[0] != PREFIX:
                raise ValueError(f"wrong prefix: first byte 0x{raw[0]:02x}, Tron addresses use 0x41")
            return raw
        if len(raw) == 32:
            return bytes([PREFIX]) + raw[-20:]
        raise ValueError(f"wrong length: {len(raw)} bytes, expected 20, 21 or 32")
    if not isinstance(address, str):
        raise ValueError(f"Tron address must be a string or bytes, got {type(address).__name__}")
    if address.startswith("T"):
        return decode_base58(address)
    text = _strip_0x(address)
    if len(text) == 42 and all(c in _HEX for c in text):
        raw = _parse_hex(text, "hex Tron address")
        if raw[0] != PREFIX:
            raise ValueError(f"wrong prefix: 21-byte hex address starts with {text[:2]!r}, expected '41'")
        return raw
    if len(text) == 40 and all(c in _HEX for c in text):
        return bytes([PREFIX]) + _parse_hex(text, "hex address")
    if len(text) == 64 and all(c in _HEX for c in text):
        return bytes([PREFIX]) + _parse_hex(text, "32-byte word")[-20:]
    if all(c in _HEX for c in text) and text:
        raise ValueError(f"wrong length: {len(text)} hex digits, expected 40, 42 ('41...') or 64 (a word)")
    return decode_base58(address)


def to_base58(address: str | bytes) -> str:
    """The base58check form of any accepted form (base58 input is validated and returned unchanged)."""
    if isinstance(address, str) and len(address) == 34 and address.startswith("T"):
        decode_base58(address)
        return address
    return encode_base58(_payload(address))


def to_hex41(address: str | bytes) -> str:
    """``41`` + 40 lowercase hex digits."""
    return _payload(address).hex()


def to_hex20(address: str | bytes) -> str:
    """40 lowercase hex digits: the form of ``log.address`` and of topics (without padding)."""
    return _payload(address)[1:].hex()


def to_word(address: str | bytes) -> str:
    """64-hex ABI word: 12 zero bytes then the 20-byte address (call parameters, topics)."""
    return "0" * 24 + to_hex20(address)


def word_to_base58(word: str) -> str:
    """base58 of the address in a 32-byte word (topic or call-data argument): the last 20 bytes, padding ignored."""
    text = _strip_0x(word)
    if len(text) != 64:
        raise ValueError(f"wrong length: a word has 64 hex digits, got {len(text)}")
    return encode_base58(bytes([PREFIX]) + _parse_hex(text, "32-byte word")[-20:])


def is_base58(address: str) -> bool:
    try:
        decode_base58(address)
    except ValueError:
        return False
    return True
