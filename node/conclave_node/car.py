"""Reading a CARv1 file offline: blocks checked against their CIDs, UnixFS files and folders reassembled.

Only what `manage.py audit_export --car` and Kubo write: CIDv0 and CIDv1
blocks hashed with sha2-256, dag-pb nodes holding UnixFS files and plain
(unsharded) directories, and raw leaves. Every block's bytes are hashed
against its CID before use, so a CAR cannot smuggle in other content. The
file is indexed once (CID -> offset) and blocks are read on demand, so a
large CAR is never loaded whole.
"""

import hashlib
from collections.abc import Iterator
from pathlib import Path

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
DAG_PB, RAW = 0x70, 0x55
UNIXFS_RAW, UNIXFS_DIRECTORY, UNIXFS_FILE = 0, 1, 2


class CarError(ValueError):
    """A CAR that is malformed, misses a block, or holds a block whose bytes are not its CID's."""


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data):
            raise CarError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise CarError("varint too long")


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, rest = divmod(number, 58)
        out = _B58[rest] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def _b32encode(data: bytes) -> str:
    bits = "".join(f"{byte:08b}" for byte in data)
    bits += "0" * (-len(bits) % 5)
    return "".join(_B32[int(bits[i : i + 5], 2)] for i in range(0, len(bits), 5))


def cid_parse(raw: bytes, position: int = 0) -> tuple[str, int, bytes, int]:
    """(CID string, codec, sha256 digest, end position) of the binary CID at `position`."""
    if raw[position : position + 2] == b"\x12\x20":
        end = position + 34
        if end > len(raw):
            raise CarError("truncated CIDv0")
        return _b58encode(raw[position:end]), DAG_PB, raw[position + 2 : end], end
    version, cursor = _varint(raw, position)
    if version != 1:
        raise CarError(f"unsupported CID version {version}")
    codec, cursor = _varint(raw, cursor)
    code, cursor = _varint(raw, cursor)
    length, cursor = _varint(raw, cursor)
    if code != 0x12 or length != 32:
        raise CarError("only sha2-256 CIDs are supported")
    end = cursor + 32
    if end > len(raw):
        raise CarError("truncated CIDv1")
    return "b" + _b32encode(raw[position:end]), codec, raw[cursor:end], end


def _fields(data: bytes) -> Iterator[tuple[int, int, object]]:
    """Protobuf fields as (number, wire type, value): varints as ints, length-delimited as bytes."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
        elif wire == 2:
            length, position = _varint(data, position)
            value, position = data[position : position + length], position + length
        else:
            raise CarError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _pb_node(block: bytes) -> tuple[list[tuple[bytes, str]], bytes]:
    links, data = [], b""
    for number, _, value in _fields(block):
        if number == 2:
            target, name = b"", ""
            for field, _, item in _fields(value):
                if field == 1:
                    target = item
                elif field == 2:
                    name = item.decode()
            links.append((target, name))
        elif number == 1:
            data = value
    return links, data


def _unixfs(data: bytes) -> tuple[int, bytes]:
    kind, content = UNIXFS_RAW, b""
    for number, _, value in _fields(data):
        if number == 1:
            kind = value
        elif number == 2:
            content = value
    return kind, content


class CarReader:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._index: dict[str, tuple[int, int, int, bytes]] = {}
        self.root = self._scan()

    def _scan(self) -> str:
        try:
            data_size = self.path.stat().st_size
            handle = self.path.open("rb")
        except OSError as exc:
            raise CarError(f"cannot read {self.path}: {exc.strerror}") from exc
        with handle:
            head = handle.read(16)
            length, start = _varint(head, 0)
            handle.seek(start)
            header = handle.read(length)
            position = start + length
            root = None
            while position < data_size:
                handle.seek(position)
                prefix = handle.read(10)
                size, used = _varint(prefix, 0)
                handle.seek(position + used)
                cid_bytes = handle.read(min(size, 64))
                cid, codec, digest, cid_end = cid_parse(cid_bytes)
                self._index[cid] = (position + used + cid_end, size - cid_end, codec, digest)
                position += used + size
        # The header is DAG-CBOR {roots: [cid], version: 1}: the root CID is the tagged (42) byte string.
        marker = header.find(b"\xd8\x2a")
        if marker < 0:
            raise CarError("CAR header names no root")
        length_byte = header[marker + 2]
        offset = marker + 3
        if length_byte == 0x58:
            offset += 1
        raw = header[offset:]
        if raw[:1] != b"\x00":
            raise CarError("malformed root CID in the CAR header")
        root, _, _, _ = cid_parse(raw, 1)
        return root

    def __contains__(self, cid: str) -> bool:
        return cid in self._index

    def block(self, cid: str) -> tuple[int, bytes]:
        found = self._index.get(cid)
        if found is None:
            raise CarError(f"block {cid} is not in {self.path.name}")
        offset, size, codec, digest = found
        with self.path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        if hashlib.sha256(data).digest() != digest:
            raise CarError(f"block {cid} in {self.path.name} does not hash to its CID")
        return codec, data

    def _cid_of(self, raw: bytes) -> str:
        return cid_parse(raw)[0]

    def read_file(self, cid: str) -> bytes:
        codec, block = self.block(cid)
        if codec == RAW:
            return block
        links, data = _pb_node(block)
        kind, content = _unixfs(data)
        if kind not in (UNIXFS_RAW, UNIXFS_FILE):
            raise CarError(f"{cid} is not a file")
        return content + b"".join(self.read_file(self._cid_of(target)) for target, _ in links)

    def list_directory(self, cid: str) -> dict[str, str]:
        codec, block = self.block(cid)
        links, data = _pb_node(block) if codec == DAG_PB else ([], b"")
        if _unixfs(data)[0] != UNIXFS_DIRECTORY:
            raise CarError(f"{cid} is not a (plain) directory")
        return {name: self._cid_of(target) for target, name in links}
