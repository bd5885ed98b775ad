"""Recognising well-formed CIDs (v0 base58btc, v1 base32) without a network call."""

import base64

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {char: index for index, char in enumerate(_B58_ALPHABET)}
_SHA2_256 = 0x12
_DAG_PB = 0x70


class InvalidCid(ValueError):
    pass


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        try:
            number = number * 58 + _B58_INDEX[char]
        except KeyError as exc:
            raise InvalidCid(f"{char!r} is not a base58btc character") from exc
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    leading_zeros = len(text) - len(text.lstrip("1"))
    return b"\x00" * leading_zeros + raw


def _b58encode(raw: bytes) -> str:
    number = int.from_bytes(raw, "big")
    chars = []
    while number:
        number, index = divmod(number, 58)
        chars.append(_B58_ALPHABET[index])
    leading_zeros = len(raw) - len(raw.lstrip(b"\x00"))
    return "1" * leading_zeros + "".join(reversed(chars))


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise InvalidCid("truncated varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def _check_multihash(data: bytes, offset: int) -> None:
    code, offset = _read_varint(data, offset)
    length, offset = _read_varint(data, offset)
    if len(data) - offset != length:
        raise InvalidCid("multihash length does not match its digest")
    if code == _SHA2_256 and length != 32:
        raise InvalidCid("a sha2-256 digest must be 32 bytes")


def validate_cid(text: str) -> str:
    """Return `text` if it is a CIDv0 or a base32 CIDv1, else raise InvalidCid."""
    if not text or len(text) > 128:
        raise InvalidCid("a CID is 1 to 128 characters")
    if text.startswith("Qm"):
        if len(text) != 46:
            raise InvalidCid("a CIDv0 is 46 base58btc characters starting with Qm")
        raw = _b58decode(text)
        if len(raw) != 34 or raw[0] != _SHA2_256 or raw[1] != 32:
            raise InvalidCid("a CIDv0 must be a sha2-256 multihash")
        return text
    if text.startswith("b"):
        body = text[1:].upper()
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except ValueError as exc:
            raise InvalidCid("not valid base32") from exc
        if base64.b32encode(raw).decode().lower().rstrip("=") != text[1:]:
            raise InvalidCid("a base32 CIDv1 must be lowercase with no stray trailing bits")
        version, offset = _read_varint(raw, 0)
        if version != 1:
            raise InvalidCid("only CID version 1 uses a multibase prefix")
        _codec, offset = _read_varint(raw, offset)
        _check_multihash(raw, offset)
        return text
    raise InvalidCid("expected a CIDv0 (Qm...) or a base32 CIDv1 (b...)")


def cid_v0_equivalent(text: str) -> str | None:
    """The CIDv0 naming the same object as base32 CIDv1 `text`, or None if there is none.

    A CIDv0 is implicitly dag-pb with a sha2-256 multihash; a CIDv1 with
    that codec and hash (`bafybei...`) is the same object under another
    name (`ipfs cid base32` converts one way, this the other).
    """
    if not text.startswith("b"):
        return None
    validate_cid(text)
    body = text[1:].upper()
    raw = base64.b32decode(body + "=" * (-len(body) % 8))
    _version, offset = _read_varint(raw, 0)
    codec, offset = _read_varint(raw, offset)
    multihash = raw[offset:]
    if codec != _DAG_PB or len(multihash) != 34 or multihash[0] != _SHA2_256 or multihash[1] != 32:
        return None
    return _b58encode(multihash)


def is_valid_cid(text: str) -> bool:
    try:
        validate_cid(text)
    except InvalidCid:
        return False
    return True
