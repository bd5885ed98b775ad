"""The typed payload of each proposal type: its shape, and what it acts on.

`payload_parse` validates the shape (field errors under `payload.<field>`);
`payload_resolve` looks up the manifests or parameter it names and returns
the normalised payload stored on the proposal, its subject and its checks.
"""

from dataclasses import dataclass

from rest_framework import serializers

from core.errors import ValidationFailed
from governance import checks
from governance.models import PARAMETERS_BY_NAME, GovernedParameter, ProposalType
from registry.models import Manifest


class ModelAdoptionPayload(serializers.Serializer):
    candidate = serializers.IntegerField(min_value=1, help_text="Id of the candidate manifest to adopt.")
    replaces = serializers.IntegerField(
        min_value=1,
        required=False,
        allow_null=True,
        default=None,
        help_text="Id of the approved manifest the candidate replaces (retired on execution).",
    )
    reason = serializers.CharField(max_length=2000, help_text="Why the network should adopt it.")


class ModelRetirementPayload(serializers.Serializer):
    manifest = serializers.IntegerField(min_value=1, help_text="Id of the approved manifest to retire.")
    replacement = serializers.IntegerField(
        min_value=1,
        required=False,
        allow_null=True,
        default=None,
        help_text="Id of the approved manifest nodes should use instead.",
    )
    reason = serializers.CharField(max_length=2000)


class ParameterChangePayload(serializers.Serializer):
    parameter = serializers.ChoiceField(choices=sorted(PARAMETERS_BY_NAME), help_text="Governed parameter to change.")
    value = serializers.IntegerField(help_text="Proposed value, within the parameter's bounds.")
    reason = serializers.CharField(max_length=2000)


PAYLOAD_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    ProposalType.MODEL_ADOPTION: ModelAdoptionPayload,
    ProposalType.MODEL_RETIREMENT: ModelRetirementPayload,
    ProposalType.PARAMETER_CHANGE: ParameterChangePayload,
}


@dataclass(frozen=True)
class ResolvedPayload:
    payload: dict
    subject: str
    checks: list[checks.CheckResult]


def _field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"Invalid payload. {field}: {message}", fields={f"payload.{field}": [message]})


def payload_parse(proposal_type: str, payload) -> dict:
    if proposal_type not in PAYLOAD_SERIALIZERS:
        choices = ", ".join(ProposalType.values)
        raise ValidationFailed(
            f"Unknown proposal type {proposal_type!r}; choose one of {choices}.",
            fields={"proposal_type": [f"Choose one of {choices}."]},
        )
    if not isinstance(payload, dict):
        raise ValidationFailed("The payload must be a JSON object.", fields={"payload": ["Expected an object."]})
    serializer = PAYLOAD_SERIALIZERS[proposal_type](data=payload)
    if not serializer.is_valid():
        fields = {
            f"payload.{name}": [str(message) for message in messages] for name, messages in serializer.errors.items()
        }
        summary = "; ".join(f"{name}: {messages[0]}" for name, messages in fields.items())
        raise ValidationFailed(f"Invalid payload. {summary}", fields=fields)
    return dict(serializer.validated_data)


def _manifest(field: str, manifest_id: int) -> Manifest:
    manifest = Manifest.objects.filter(pk=manifest_id).first()
    if manifest is None:
        raise _field_error(field, f"No manifest with id {manifest_id}.")
    return manifest


def manifest_summary(manifest: Manifest) -> dict:
    return {
        "id": manifest.pk,
        "model_name": manifest.model_name,
        "version": manifest.version,
        "kind": manifest.kind,
        "format": manifest.format,
        "license": manifest.license,
        "size_bytes": manifest.size_bytes,
        "sha256": manifest.sha256,
        "ipfs_cid": manifest.ipfs_cid,
    }


def payload_resolve(proposal_type: str, data: dict, *, parameters: dict[str, GovernedParameter]) -> ResolvedPayload:
    """Look up what a parsed payload names; run its content checks.

    `parameters` holds the governed parameters as they are now: a
    parameter-change payload captures the current value and is checked
    against the bounds.
    """
    if proposal_type == ProposalType.MODEL_ADOPTION:
        candidate = _manifest("candidate", data["candidate"])
        replaces = _manifest("replaces", data["replaces"]) if data.get("replaces") else None
        return ResolvedPayload(
            payload={
                "candidate": candidate.pk,
                "replaces": replaces.pk if replaces else None,
                "reason": data["reason"],
                "candidate_manifest": manifest_summary(candidate),
                "replaces_manifest": manifest_summary(replaces) if replaces else None,
            },
            subject=f"manifest:{candidate.pk}",
            checks=checks.adoption_checks(candidate, replaces),
        )
    if proposal_type == ProposalType.MODEL_RETIREMENT:
        manifest = _manifest("manifest", data["manifest"])
        replacement = _manifest("replacement", data["replacement"]) if data.get("replacement") else None
        if replacement is not None and replacement.pk == manifest.pk:
            raise _field_error("replacement", "A manifest cannot replace itself.")
        return ResolvedPayload(
            payload={
                "manifest": manifest.pk,
                "replacement": replacement.pk if replacement else None,
                "reason": data["reason"],
                "manifest_summary": manifest_summary(manifest),
                "replacement_manifest": manifest_summary(replacement) if replacement else None,
            },
            subject=f"manifest:{manifest.pk}",
            checks=checks.retirement_checks(manifest, replacement),
        )
    parameter = parameters[data["parameter"]]
    value = data["value"]
    if not parameter.minimum <= value <= parameter.maximum:
        raise _field_error(
            "value", f"{parameter.name} must be between {parameter.minimum} and {parameter.maximum}; got {value}."
        )
    if value == parameter.value:
        raise _field_error("value", f"{parameter.name} is already {parameter.value}; propose a different value.")
    return ResolvedPayload(
        payload={
            "parameter": parameter.name,
            "value": value,
            "current_value": parameter.value,
            "reason": data["reason"],
        },
        subject=f"parameter:{parameter.name}",
        checks=[
            checks.CheckResult(
                "bounds", True, f"{value} is within [{parameter.minimum}, {parameter.maximum}] {parameter.unit}".strip()
            ),
        ],
    )
