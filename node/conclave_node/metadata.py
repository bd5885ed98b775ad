"""Signed metadata in The Update Framework's shape, shared by the platform and the node.

Two roles, each an envelope `{"signed": {...}, "signatures": [{"keyid", "sig"}]}`
whose signatures are Ed25519 (the `cryptography` library) over the RFC 8785
canonical JSON of `signed`:

- `root`: the trust anchor. Lists every public key and, per role, the key
  ids allowed to sign it and how many must (the threshold). Root version N+1
  is trusted only when a threshold of root N's root keys *and* a threshold of
  its own root keys signed it, so keys rotate (and revoked keys drop out)
  along a chain a node can check from the root it was given at `init`.
- `approved_set`: the whole approved set in one document (version, expiry,
  every manifest with each file's path, size, sha256 and CID, and how it was
  adopted), signed by a threshold of the online keys root lists. It plays
  TUF's targets, snapshot and timestamp roles at once: one document means no
  mix-and-match between files of different sets, and its short expiry (the
  platform re-signs it before then) bounds how long a frozen mirror can hide
  newer sets. Its `parameters` are the governed limits (the live values the
  last executed parameter-change proposals set), so a node enforces what
  governance decided, under the same signatures as the models.

Key ids are TUF's: the sha256 of the canonical JSON of the public key.
Nothing here touches Django, so the node agent and the platform use the same
code to produce and to check every byte that is signed.
"""

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import rfc8785
from aleph_cid import compute_cid
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from conclave_node.errors import (
    ExpiredMetadata,
    MetadataFormatError,
    RollbackAttack,
    RootRotationError,
    SignatureError,
)

SPEC_VERSION = "1.0"
ROOT_ROLE = "root"
SET_ROLE = "approved_set"
ROLES = (ROOT_ROLE, SET_ROLE)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")


# --- Canonical form, keys, signatures -------------------------------------------


def canonical(value: Any) -> bytes:
    return rfc8785.dumps(value)


def public_key_document(public: Ed25519PublicKey) -> dict:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": raw.hex()}}


def key_id(document: dict) -> str:
    return hashlib.sha256(canonical(document)).hexdigest()


def public_key_from_document(document: dict) -> Ed25519PublicKey:
    if document.get("keytype") != "ed25519" or document.get("scheme") != "ed25519":
        raise MetadataFormatError(f"unsupported key type {document.get('keytype')!r}/{document.get('scheme')!r}")
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(document["keyval"]["public"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise MetadataFormatError(f"malformed ed25519 public key: {exc}") from exc


def sign_envelope(signed: dict, private_keys: list[Ed25519PrivateKey]) -> dict:
    """Wrap `signed` with one signature per key (used by the platform)."""
    payload = canonical(signed)
    signatures = []
    for private in private_keys:
        keyid = key_id(public_key_document(private.public_key()))
        signatures.append({"keyid": keyid, "sig": private.sign(payload).hex()})
    signatures.sort(key=lambda s: s["keyid"])
    return {"signed": signed, "signatures": signatures}


def timestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_timestamp(text: Any, *, field: str) -> dt.datetime:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise MetadataFormatError(f"{field} must be an RFC 3339 UTC timestamp ending in Z, got {text!r}")
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise MetadataFormatError(f"{field} is not a timestamp: {text!r}") from exc


# --- Parsing ------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleKeys:
    keyids: frozenset[str]
    threshold: int


@dataclass(frozen=True)
class Root:
    version: int
    expires: dt.datetime
    keys: dict[str, Ed25519PublicKey]
    roles: dict[str, RoleKeys]
    envelope: dict

    def role(self, name: str) -> RoleKeys:
        return self.roles[name]


def load_json(data: bytes, *, what: str) -> dict:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MetadataFormatError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise MetadataFormatError(f"{what} must be a JSON object")
    return value


def _envelope_parts(envelope: dict, *, expected_type: str) -> tuple[dict, list]:
    signed = envelope.get("signed")
    signatures = envelope.get("signatures")
    if not isinstance(signed, dict) or not isinstance(signatures, list):
        raise MetadataFormatError(f"{expected_type} metadata needs 'signed' (object) and 'signatures' (list)")
    if signed.get("_type") != expected_type:
        raise MetadataFormatError(f"expected {expected_type} metadata, got _type {signed.get('_type')!r}")
    spec = signed.get("spec_version")
    if not isinstance(spec, str) or spec.split(".")[0] != SPEC_VERSION.split(".")[0]:
        raise MetadataFormatError(f"unsupported spec_version {spec!r} (this agent speaks {SPEC_VERSION})")
    version = signed.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MetadataFormatError(f"{expected_type} version must be a positive integer, got {version!r}")
    return signed, signatures


def parse_root(envelope: dict) -> Root:
    signed, _ = _envelope_parts(envelope, expected_type=ROOT_ROLE)
    raw_keys = signed.get("keys")
    raw_roles = signed.get("roles")
    if not isinstance(raw_keys, dict) or not isinstance(raw_roles, dict):
        raise MetadataFormatError("root metadata needs 'keys' and 'roles' objects")
    keys: dict[str, Ed25519PublicKey] = {}
    for keyid, document in raw_keys.items():
        if not isinstance(document, dict) or key_id(document) != keyid:
            raise MetadataFormatError(f"root lists key {keyid[:12]}… under an id that is not its hash")
        keys[keyid] = public_key_from_document(document)
    roles: dict[str, RoleKeys] = {}
    for name in ROLES:
        role = raw_roles.get(name)
        if not isinstance(role, dict):
            raise MetadataFormatError(f"root metadata has no {name!r} role")
        keyids, threshold = role.get("keyids"), role.get("threshold")
        if (
            not isinstance(keyids, list)
            or not all(isinstance(k, str) for k in keyids)
            or len(set(keyids)) != len(keyids)
        ):
            raise MetadataFormatError(f"role {name!r}: keyids must be a list of distinct key ids")
        if not isinstance(threshold, int) or isinstance(threshold, bool) or not 1 <= threshold <= len(keyids):
            raise MetadataFormatError(f"role {name!r}: threshold must be 1..{len(keyids)}, got {threshold!r}")
        missing = [k for k in keyids if k not in keys]
        if missing:
            raise MetadataFormatError(f"role {name!r} names keys root does not list: {', '.join(missing)}")
        roles[name] = RoleKeys(keyids=frozenset(keyids), threshold=threshold)
    return Root(
        version=signed["version"],
        expires=parse_timestamp(signed.get("expires"), field="root expires"),
        keys=keys,
        roles=roles,
        envelope=envelope,
    )


def verify_threshold(envelope: dict, *, root: Root, role: str, what: str) -> frozenset[str]:
    """Return the key ids with a valid signature; raise unless at least `threshold` of `role` signed.

    A key counts once however many signatures carry its id, and only keys
    the role lists count, so neither repeating one signature nor adding
    signatures from unknown (or revoked) keys can reach the threshold.
    """
    allowed = root.role(role)
    payload = canonical(envelope["signed"])
    valid: set[str] = set()
    foreign: set[str] = set()
    invalid: set[str] = set()
    for signature in envelope["signatures"]:
        if not isinstance(signature, dict):
            continue
        keyid, sig = signature.get("keyid"), signature.get("sig")
        if not isinstance(keyid, str) or not isinstance(sig, str):
            continue
        if keyid not in allowed.keyids:
            foreign.add(keyid)
            continue
        if keyid in valid:
            continue
        try:
            root.keys[keyid].verify(bytes.fromhex(sig), payload)
        except (InvalidSignature, ValueError):
            invalid.add(keyid)
            continue
        valid.add(keyid)
    if len(valid) < allowed.threshold:
        details = []
        if invalid:
            details.append(f"{len(invalid)} signature(s) do not match the content")
        if foreign:
            details.append(
                f"{len(foreign)} from key(s) root v{root.version} does not trust for {role}: "
                + ", ".join(sorted(k[:12] for k in foreign))
            )
        detail = f" ({'; '.join(details)})" if details else ""
        raise SignatureError(
            f"{what}: {len(valid)} valid signature(s) from {role} keys, {allowed.threshold} required{detail}"
        )
    return frozenset(valid)


def verify_new_root(trusted: Root, envelope: dict) -> Root:
    """Check root version trusted+1 against the trusted root and itself (TUF 5.3.4-5.3.6)."""
    try:
        candidate = parse_root(envelope)
    except MetadataFormatError as exc:
        raise RootRotationError(f"root v{trusted.version + 1} is malformed: {exc.message}") from exc
    try:
        verify_threshold(
            envelope, root=trusted, role=ROOT_ROLE, what=f"root v{candidate.version} (by root v{trusted.version})"
        )
        verify_threshold(envelope, root=candidate, role=ROOT_ROLE, what=f"root v{candidate.version} (by itself)")
    except SignatureError as exc:
        raise RootRotationError(exc.message) from exc
    if candidate.version != trusted.version + 1:
        raise RootRotationError(f"expected root v{trusted.version + 1}, got v{candidate.version}")
    return candidate


def verify_trust_root(envelope: dict) -> Root:
    """A root given at `init`: well formed and signed by a threshold of its own root keys."""
    root = parse_root(envelope)
    verify_threshold(envelope, root=root, role=ROOT_ROLE, what=f"root v{root.version}")
    return root


# --- The signed approved set ----------------------------------------------------------


@dataclass(frozen=True)
class SignedFile:
    path: str
    role: str
    size: int
    sha256: str
    cid: str


@dataclass(frozen=True)
class SignedManifest:
    model_name: str
    version: str
    kind: str
    format: str
    files: tuple[SignedFile, ...]
    document: dict
    # The registry's `manifest_cid` when the set was signed: what a serving node announces. Sets signed
    # before it was carried: derived from the entry (see `manifest_cid_derive`).
    manifest_cid: str = ""

    @property
    def key(self) -> str:
        return f"{self.model_name}@{self.version}"


@dataclass(frozen=True)
class AuditHead:
    """The platform's audit chain head when the set was signed (what a node witnesses)."""

    seq: int
    hash: str
    checkpoint_cid: str | None

    def as_dict(self) -> dict:
        return {"seq": self.seq, "hash": self.hash, "checkpoint_cid": self.checkpoint_cid}


@dataclass(frozen=True)
class SignedSet:
    version: int
    expires: dt.datetime
    approved_set_version: int
    manifests: tuple[SignedManifest, ...]
    envelope: dict
    keyids: frozenset[str]
    # None only in sets signed before the platform carried its audit head.
    audit_head: AuditHead | None = None
    # The governed limits (name -> value); None when the platform signed none.
    parameters: dict[str, int] | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for m in self.manifests for f in m.files)


def _manifest(document: Any, index: int) -> SignedManifest:
    where = f"manifests[{index}]"
    if not isinstance(document, dict):
        raise MetadataFormatError(f"{where} must be an object")
    for name in ("model_name", "version"):
        if not isinstance(document.get(name), str) or not _SAFE_NAME.match(document[name]) or ".." in document[name]:
            raise MetadataFormatError(f"{where}.{name} is not a safe name: {document.get(name)!r}")
    files = document.get("files")
    if not isinstance(files, list) or not files:
        raise MetadataFormatError(f"{where}.files must be a non-empty list")
    parsed = []
    for position, entry in enumerate(files):
        spot = f"{where}.files[{position}]"
        if not isinstance(entry, dict):
            raise MetadataFormatError(f"{spot} must be an object")
        path, size, sha, cid = entry.get("path"), entry.get("size_bytes"), entry.get("sha256"), entry.get("cid")
        # Paths become file names under the models folder: plain names only.
        if not isinstance(path, str) or not _SAFE_NAME.match(path) or ".." in path:
            raise MetadataFormatError(f"{spot}.path is not a plain file name: {path!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise MetadataFormatError(f"{spot}.size_bytes must be a non-negative integer")
        if not isinstance(sha, str) or not _HEX64.match(sha):
            raise MetadataFormatError(f"{spot}.sha256 must be 64 lowercase hex digits")
        if not isinstance(cid, str) or not cid or len(cid) > 128:
            raise MetadataFormatError(f"{spot}.cid is missing")
        parsed.append(SignedFile(path=path, role=str(entry.get("role", "")), size=size, sha256=sha, cid=cid))
    if len({f.path for f in parsed}) != len(parsed):
        raise MetadataFormatError(f"{where} lists a file path twice")
    manifest_cid = document.get("manifest_cid")
    if manifest_cid is None:
        manifest_cid = manifest_cid_derive(document)
    elif not isinstance(manifest_cid, str) or not manifest_cid or len(manifest_cid) > 128:
        raise MetadataFormatError(f"{where}.manifest_cid must be a CID, got {manifest_cid!r}")
    return SignedManifest(
        model_name=document["model_name"],
        version=document["version"],
        kind=str(document.get("kind", "")),
        format=str(document.get("format", "")),
        files=tuple(parsed),
        document=document,
        manifest_cid=manifest_cid,
    )


# What the platform's signing adds to each manifest document of the approved set.
SIGNED_ENTRY_EXTRAS = ("adoption", "manifest_cid")


def manifest_cid_derive(entry: dict) -> str:
    """The CID of a signed set's manifest entry without what signing added: the registry's `manifest_cid`."""
    return compute_cid(canonical({k: v for k, v in entry.items() if k not in SIGNED_ENTRY_EXTRAS}))


def parse_audit_head(value: Any) -> AuditHead | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MetadataFormatError("audit_head must be an object {seq, hash, checkpoint_cid}")
    seq, digest, cid = value.get("seq"), value.get("hash"), value.get("checkpoint_cid")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise MetadataFormatError(f"audit_head.seq must be a non-negative integer, got {seq!r}")
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise MetadataFormatError("audit_head.hash must be 64 lowercase hex digits")
    if cid is not None and (not isinstance(cid, str) or not cid or len(cid) > 128):
        raise MetadataFormatError(f"audit_head.checkpoint_cid must be a CID or null, got {cid!r}")
    return AuditHead(seq=seq, hash=digest, checkpoint_cid=cid)


_PARAMETER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_PARAMETER_VALUE = 2**53 - 1  # RFC 8785 safe integers


def _parameters(value: Any) -> dict[str, int] | None:
    """The signed `parameters` object: governed limit names to non-negative integers."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MetadataFormatError("approved set parameters must be an object of name -> integer")
    parsed = {}
    for name, number in value.items():
        if not isinstance(name, str) or not _PARAMETER_NAME.match(name):
            raise MetadataFormatError(f"approved set parameters: {name!r} is not a parameter name")
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number <= MAX_PARAMETER_VALUE:
            raise MetadataFormatError(f"approved set parameters: {name} must be a non-negative integer, got {number!r}")
        parsed[name] = number
    return parsed


def verify_signed_set(envelope: dict, *, root: Root, now: dt.datetime | None) -> SignedSet:
    """Signatures (threshold of the online keys root lists), shape and expiry of a signed set.

    `now=None` skips the expiry check only: for a set already installed,
    whose signatures a serving node re-checks when it loads it.
    """
    signed, _ = _envelope_parts(envelope, expected_type=SET_ROLE)
    keyids = verify_threshold(envelope, root=root, role=SET_ROLE, what=f"approved set v{signed['version']}")
    expires = parse_timestamp(signed.get("expires"), field="approved set expires")
    approved = signed.get("approved_set")
    if not isinstance(approved, dict) or not isinstance(approved.get("version"), int) or approved["version"] < 0:
        raise MetadataFormatError("approved set metadata needs approved_set.version")
    manifests = signed.get("manifests")
    if not isinstance(manifests, list):
        raise MetadataFormatError("approved set metadata needs a manifests list")
    parsed = tuple(_manifest(document, index) for index, document in enumerate(manifests))
    if len({m.key for m in parsed}) != len(parsed):
        raise MetadataFormatError("approved set lists a manifest twice")
    signed_set = SignedSet(
        version=signed["version"],
        expires=expires,
        approved_set_version=approved["version"],
        manifests=parsed,
        envelope=envelope,
        keyids=keyids,
        audit_head=parse_audit_head(signed.get("audit_head")),
        parameters=_parameters(signed.get("parameters")),
    )
    if now is not None:
        check_not_expired(signed_set.expires, now=now, what=f"approved set v{signed_set.version}")
    return signed_set


def check_not_expired(expires: dt.datetime, *, now: dt.datetime, what: str) -> None:
    if now >= expires:
        raise ExpiredMetadata(
            f"{what} expired at {timestamp(expires)} (now {timestamp(now)}): the server or mirror is serving "
            "stale metadata (freeze attack, or the platform stopped re-signing)"
        )


def check_not_rolled_back(
    new: SignedSet, *, last_version: int, last_digest: str | None, last_approved_version: int
) -> None:
    digest = envelope_digest(new.envelope)
    if new.version < last_version:
        raise RollbackAttack(
            f"approved set v{new.version} is older than v{last_version}, which this node already trusted"
        )
    if new.version == last_version and last_digest and digest != last_digest:
        raise RollbackAttack(f"approved set v{new.version} differs from the v{last_version} this node already trusted")
    if new.approved_set_version < last_approved_version:
        raise RollbackAttack(
            f"signed set v{new.version} carries approved set v{new.approved_set_version}, "
            f"older than v{last_approved_version} already trusted"
        )


def envelope_digest(envelope: dict) -> str:
    return hashlib.sha256(canonical(envelope["signed"])).hexdigest()
