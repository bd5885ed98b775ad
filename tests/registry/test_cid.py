"""Recognising well-formed CIDs: real ones from aleph-cid pass, damaged ones fail."""

import base64

import pytest
from aleph_cid import CidHasher, compute_cid, hash_folder
from hypothesis import given
from hypothesis import strategies as st

from core.ipfs.cid import _B58_ALPHABET, InvalidCid, is_valid_cid, validate_cid

HELLO_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"


def _v1(data: bytes) -> str:
    hasher = CidHasher.for_ipfs_v1_raw_leaves()
    hasher.update(data)
    return hasher.finalize()


def _b32(raw: bytes) -> str:
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def _unb32(cid: str) -> bytes:
    body = cid[1:].upper()
    return base64.b32decode(body + "=" * (-len(body) % 8))


@pytest.fixture
def folder_cids(tmp_path) -> tuple[str, str]:
    (tmp_path / "a.txt").write_bytes(b"alpha")
    (tmp_path / "b.bin").write_bytes(bytes(300_000))
    return hash_folder(tmp_path, cid_version=0), hash_folder(tmp_path, cid_version=1)


def test_real_cids_are_accepted(folder_cids):
    folder_v0, folder_v1 = folder_cids
    single_block_v1 = _v1(b"hello world\n")  # bafkrei...: raw codec
    multi_block_v1 = _v1(bytes(600_000))  # bafybei...: dag-pb root over raw leaves

    for cid in (HELLO_V0, compute_cid(b""), folder_v0, folder_v1, single_block_v1, multi_block_v1):
        assert validate_cid(cid) == cid
        assert is_valid_cid(cid)
    assert single_block_v1.startswith("bafkrei")
    assert multi_block_v1.startswith("bafybei")
    assert folder_v1.startswith("bafybei")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Zm" + HELLO_V0[2:],  # not Qm, not b
        "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA",  # base58btc CIDv1: unsupported multibase
        "B" + _v1(b"x")[1:].upper(),  # base32 upper multibase prefix
        "x" * 129,
    ],
)
def test_wrong_prefix_or_form_is_rejected(text):
    with pytest.raises(InvalidCid):
        validate_cid(text)
    assert not is_valid_cid(text)


@pytest.mark.parametrize("text", [HELLO_V0[:-1], HELLO_V0 + "a", "Qm"])
def test_wrong_v0_length_is_rejected(text):
    with pytest.raises(InvalidCid, match="46 base58btc characters"):
        validate_cid(text)


@pytest.mark.parametrize("bad", ["0", "O", "I", "l", "+", "/", "é"])
def test_non_base58_characters_are_rejected(bad):
    text = HELLO_V0[:10] + bad + HELLO_V0[11:]
    with pytest.raises(InvalidCid, match="base58btc"):
        validate_cid(text)


def test_v0_that_is_not_a_sha256_multihash_is_rejected():
    # 34 bytes whose first byte is not sha2-256's code, spelled as 46 characters starting Qm.
    tampered = "Qm" + "z" * 44
    with pytest.raises(InvalidCid):
        validate_cid(tampered)


@pytest.mark.parametrize("body", ["afy1", "afy8", "afy9", "afy0", "a"])
def test_bad_base32_is_rejected(body):
    with pytest.raises(InvalidCid):
        validate_cid("b" + body)


def test_truncated_multihash_is_rejected():
    raw = _unb32(_v1(b"hello world\n"))
    assert validate_cid(_b32(raw))
    for cut in (1, 5, 31, 32):
        with pytest.raises(InvalidCid):
            validate_cid(_b32(raw[:-cut]))


def test_non_canonical_base32_spellings_are_rejected():
    """One CID, one spelling: upper case or stray trailing bits would let two strings name the same CID."""
    cid = _v1(b"hello world\n")
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    stray_bits = cid[:-1] + alphabet[alphabet.index(cid[-1]) ^ 1]
    assert _unb32(stray_bits) == _unb32(cid)

    for alias in ("b" + cid[1:].upper(), "b" + cid[1:5].upper() + cid[5:], stray_bits):
        with pytest.raises(InvalidCid, match="lowercase"):
            validate_cid(alias)


def test_overlong_multihash_is_rejected():
    raw = _unb32(_v1(b"hello world\n"))
    with pytest.raises(InvalidCid, match="multihash length"):
        validate_cid(_b32(raw + b"\x00"))


def test_sha256_digest_must_be_32_bytes():
    # version 1, raw codec, sha2-256 declared 20 bytes long with 20 bytes present.
    raw = bytes([0x01, 0x55, 0x12, 20]) + bytes(20)
    with pytest.raises(InvalidCid, match="32 bytes"):
        validate_cid(_b32(raw))


def test_cid_version_other_than_one_in_base32_is_rejected():
    raw = _unb32(_v1(b"hello world\n"))
    with pytest.raises(InvalidCid, match="version 1"):
        validate_cid(_b32(bytes([0x02]) + raw[1:]))


# A random piece repeated up to ~1 MiB: empty, single-block and multi-block files alike.
contents = st.builds(lambda piece, times: piece * times, st.binary(max_size=512), st.integers(0, 2048))


@given(contents)
def test_every_computed_v0_cid_validates(data):
    cid = compute_cid(data)
    assert cid.startswith("Qm")
    assert validate_cid(cid) == cid


@given(contents)
def test_every_computed_v1_cid_validates(data):
    cid = _v1(data)
    assert validate_cid(cid) == cid


@given(st.text(max_size=200))
def test_arbitrary_text_only_ever_raises_invalid_cid(text):
    try:
        assert validate_cid(text) == text
    except InvalidCid:
        pass


@given(st.integers(min_value=2, max_value=45), st.sampled_from("0OIl"))
def test_any_non_base58_character_anywhere_is_rejected(position, bad):
    assert bad not in _B58_ALPHABET
    text = HELLO_V0[:position] + bad + HELLO_V0[position + 1 :]
    assert not is_valid_cid(text)


def test_the_cidv0_equivalent_of_a_dag_pb_cidv1_and_of_nothing_else():
    from core.ipfs.cid import cid_v0_equivalent

    v0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    assert cid_v0_equivalent("bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby") == v0
    assert cid_v0_equivalent(v0) is None
    assert cid_v0_equivalent("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4") is None
