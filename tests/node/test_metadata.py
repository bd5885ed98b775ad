"""The metadata checks the agent and the platform share, on in-memory keys (no database, no network)."""

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conclave_node.errors import ExpiredMetadata, MetadataFormatError, RollbackAttack, SignatureError
from conclave_node.metadata import (
    check_not_rolled_back,
    key_id,
    parse_root,
    public_key_document,
    sign_envelope,
    timestamp,
    verify_signed_set,
    verify_trust_root,
)

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
SHA = "a" * 64


def make_root(root_keys, online_keys, *, root_threshold=1, online_threshold=1, version=1):
    docs = {
        key_id(public_key_document(k.public_key())): public_key_document(k.public_key())
        for k in [*root_keys, *online_keys]
    }
    signed = {
        "_type": "root",
        "spec_version": "1.0",
        "version": version,
        "expires": timestamp(NOW + dt.timedelta(days=365)),
        "consistent_snapshot": False,
        "keys": docs,
        "roles": {
            "root": {
                "keyids": sorted(key_id(public_key_document(k.public_key())) for k in root_keys),
                "threshold": root_threshold,
            },
            "approved_set": {
                "keyids": sorted(key_id(public_key_document(k.public_key())) for k in online_keys),
                "threshold": online_threshold,
            },
        },
    }
    return sign_envelope(signed, root_keys)


def make_set(keys, *, version=1, approved=1, expires=NOW + dt.timedelta(days=1), files=None):
    signed = {
        "_type": "approved_set",
        "spec_version": "1.0",
        "version": version,
        "expires": timestamp(expires),
        "approved_set": {"version": approved},
        "manifests": [
            {
                "model_name": "m",
                "version": "1",
                "files": files
                or [{"path": "model.gguf", "role": "weights", "size_bytes": 5, "sha256": SHA, "cid": "QmX"}],
            }
        ],
    }
    return sign_envelope(signed, keys)


@pytest.fixture(scope="module")
def keys():
    return {"root": Ed25519PrivateKey.generate(), "online": [Ed25519PrivateKey.generate() for _ in range(3)]}


@pytest.fixture(scope="module")
def root(keys):
    return verify_trust_root(make_root([keys["root"]], keys["online"], online_threshold=2))


def test_a_threshold_of_distinct_listed_keys_verifies(root, keys):
    verified = verify_signed_set(make_set(keys["online"][:2]), root=root, now=NOW)
    assert len(verified.keyids) == 2


def test_a_repeated_signature_counts_once(root, keys):
    envelope = make_set(keys["online"][:1])
    envelope["signatures"] = envelope["signatures"] * 2
    with pytest.raises(SignatureError, match="1 valid"):
        verify_signed_set(envelope, root=root, now=NOW)


def test_the_root_key_cannot_sign_sets(root, keys):
    with pytest.raises(SignatureError, match="does not trust"):
        verify_signed_set(make_set([keys["root"], keys["online"][0]]), root=root, now=NOW)


def test_an_altered_document_fails_every_signature(root, keys):
    envelope = make_set(keys["online"])
    envelope["signed"]["manifests"][0]["files"][0]["size_bytes"] = 6
    with pytest.raises(SignatureError, match="3 signature"):
        verify_signed_set(envelope, root=root, now=NOW)


def test_expiry_is_checked_after_the_signatures(root, keys):
    with pytest.raises(ExpiredMetadata):
        verify_signed_set(make_set(keys["online"][:2], expires=NOW), root=root, now=NOW)


@pytest.mark.parametrize("path", ["../evil", "sub/model.gguf", ".hidden", "", "a" * 300])
def test_file_paths_must_be_plain_names(root, keys, path):
    files = [{"path": path, "size_bytes": 5, "sha256": SHA, "cid": "QmX"}]
    with pytest.raises(MetadataFormatError):
        verify_signed_set(make_set(keys["online"][:2], files=files), root=root, now=NOW)


def test_a_root_whose_key_ids_are_not_key_hashes_is_malformed(keys):
    envelope = make_root([keys["root"]], keys["online"])
    first = next(iter(envelope["signed"]["keys"]))
    envelope["signed"]["keys"]["f" * 64] = envelope["signed"]["keys"].pop(first)
    with pytest.raises(MetadataFormatError):
        parse_root(envelope)


def test_a_threshold_above_the_key_count_is_malformed(keys):
    with pytest.raises(MetadataFormatError, match="threshold"):
        parse_root(make_root([keys["root"]], keys["online"], online_threshold=4))


def test_same_version_with_other_content_is_a_rollback(root, keys):
    first = verify_signed_set(make_set(keys["online"][:2]), root=root, now=NOW)
    other = verify_signed_set(make_set(keys["online"][:2], expires=NOW + dt.timedelta(days=2)), root=root, now=NOW)
    from conclave_node.metadata import envelope_digest

    check_not_rolled_back(first, last_version=1, last_digest=envelope_digest(first.envelope), last_approved_version=1)
    with pytest.raises(RollbackAttack, match="differs"):
        check_not_rolled_back(
            other, last_version=1, last_digest=envelope_digest(first.envelope), last_approved_version=1
        )


def make_set_with_head(keys, head):
    envelope = make_set(keys)
    signed = {**envelope["signed"], "audit_head": head}
    return sign_envelope(signed, keys)


def test_the_audit_head_is_parsed_from_the_signed_set(root, keys):
    head = {"seq": 7, "hash": "b" * 64, "checkpoint_cid": "QmCheckpoint"}
    verified = verify_signed_set(make_set_with_head(keys["online"][:2], head), root=root, now=NOW)
    assert verified.audit_head.as_dict() == head


def test_a_set_without_an_audit_head_still_verifies(root, keys):
    assert verify_signed_set(make_set(keys["online"][:2]), root=root, now=NOW).audit_head is None


@pytest.mark.parametrize(
    "head",
    [
        {"seq": -1, "hash": "b" * 64, "checkpoint_cid": None},
        {"seq": True, "hash": "b" * 64, "checkpoint_cid": None},
        {"seq": 3, "hash": "B" * 64, "checkpoint_cid": None},
        {"seq": 3, "hash": "b" * 63, "checkpoint_cid": None},
        {"seq": 3, "hash": "b" * 64, "checkpoint_cid": ""},
        "head",
    ],
)
def test_a_malformed_audit_head_is_refused(root, keys, head):
    with pytest.raises(MetadataFormatError, match="audit_head"):
        verify_signed_set(make_set_with_head(keys["online"][:2], head), root=root, now=NOW)


# --- Governed parameters ------------------------------------------------------------------


def set_with_parameters(keys, parameters):
    envelope = make_set(keys["online"][:2])
    envelope["signed"]["parameters"] = parameters
    return sign_envelope(envelope["signed"], keys["online"][:2])


def test_signed_parameters_become_the_nodes_limits(root, keys):
    from conclave_node.limits import limits_from

    verified = verify_signed_set(
        set_with_parameters(keys, {"max_tokens_per_request": 64, "queue_size": 0, "future_limit": 3}),
        root=root,
        now=NOW,
    )
    limits = limits_from(verified.parameters)
    assert (limits.max_tokens_per_request, limits.queue_size, limits.signed) == (64, 0, True)
    assert limits.max_concurrent_requests == 2  # not signed: the governance default


def test_a_set_without_parameters_falls_back_to_the_defaults(root, keys):
    from conclave_node.limits import Limits, limits_from

    verified = verify_signed_set(make_set(keys["online"][:2]), root=root, now=NOW)
    assert verified.parameters is None
    assert limits_from(verified.parameters) == Limits(signed=False)


@pytest.mark.parametrize(
    "parameters",
    [[1], {"queue_size": "5"}, {"queue_size": -1}, {"queue_size": True}, {"Bad Name": 1}, {"queue_size": 1.5}],
)
def test_malformed_parameters_are_refused(root, keys, parameters):
    with pytest.raises(MetadataFormatError):
        verify_signed_set(set_with_parameters(keys, parameters), root=root, now=NOW)


def test_a_limit_a_node_cannot_serve_with_is_refused(root, keys):
    from conclave_node.limits import limits_from

    verified = verify_signed_set(set_with_parameters(keys, {"max_concurrent_requests": 0}), root=root, now=NOW)
    with pytest.raises(MetadataFormatError, match="max_concurrent_requests"):
        limits_from(verified.parameters)


def test_an_installed_set_is_verified_without_its_expiry(root, keys):
    expired = make_set(keys["online"][:2], expires=NOW)
    assert verify_signed_set(expired, root=root, now=None).version == 1
    expired["signed"]["parameters"] = {"queue_size": 1000}
    with pytest.raises(SignatureError):
        verify_signed_set(expired, root=root, now=None)


def test_a_set_without_manifest_cids_gets_them_derived_from_each_entry_without_what_signing_added(root, keys):
    from aleph_cid import compute_cid

    from conclave_node.metadata import canonical

    envelope = make_set(keys["online"][:2])
    plain = dict(envelope["signed"]["manifests"][0])
    with_adoption = {**envelope["signed"], "manifests": [{**plain, "adoption": {"operator_action": True}}]}
    verified = verify_signed_set(sign_envelope(with_adoption, keys["online"][:2]), root=root, now=NOW)
    assert verified.manifests[0].manifest_cid == compute_cid(canonical(plain))


@pytest.mark.parametrize("cid", [7, "", "x" * 129])
def test_a_malformed_manifest_cid_is_refused(root, keys, cid):
    envelope = make_set(keys["online"][:2])
    entry = {**envelope["signed"]["manifests"][0], "manifest_cid": cid}
    signed = {**envelope["signed"], "manifests": [entry]}
    with pytest.raises(MetadataFormatError, match="manifest_cid"):
        verify_signed_set(sign_envelope(signed, keys["online"][:2]), root=root, now=NOW)
