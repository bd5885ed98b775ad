"""Browser forms: they collect input for the services and show their errors inline.

They hold no rules of their own beyond field shapes; the services decide,
and `show_domain_error` puts what a service refused next to the field it
names (`payload.value` → the value field, `checks.license` → the form's
list of failed checks).
"""

from django import forms

from core.errors import DomainError
from governance.models import (
    PARAMETER_DEFINITIONS,
    ProposalState,
    ProposalType,
    VoteChoice,
)
from registry.models import Manifest, ManifestStatus


class ManifestChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, manifest: Manifest) -> str:
        return f"{manifest.model_name} {manifest.version} ({manifest.kind}, {manifest.format}, {manifest.license})"


class DomainErrorFormMixin:
    """Show a service's DomainError on the form."""

    failed_checks: list[str]

    def show_domain_error(self, exc: DomainError) -> None:
        self.failed_checks = []
        shown = False
        for name, messages in (exc.fields or {}).items():
            field = name.removeprefix("payload.")
            if name.startswith("checks."):
                self.failed_checks += [f"{name.removeprefix('checks.')}: {m}" for m in messages]
                shown = True
            elif field in self.fields:
                for message in messages:
                    self.add_error(field, message)
                shown = True
        if not shown or exc.code == "checks_failed":
            self.add_error(None, exc.message)


class ProposalForm(DomainErrorFormMixin, forms.Form):
    proposal_type: str = ""
    title = forms.CharField(max_length=200)
    description = forms.CharField(
        max_length=10_000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Context for voters: what changes, why now, what was measured.",
    )
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One or two sentences, kept with the decision.",
    )

    def payload(self) -> dict:
        raise NotImplementedError


class ModelAdoptionForm(ProposalForm):
    proposal_type = ProposalType.MODEL_ADOPTION
    field_order = ["title", "candidate", "replaces", "reason", "description"]
    candidate = ManifestChoiceField(
        queryset=Manifest.objects.filter(status=ManifestStatus.CANDIDATE).order_by("model_name", "version"),
        help_text="A registered candidate. Its files, license and size are checked before voting opens.",
    )
    replaces = ManifestChoiceField(
        queryset=Manifest.objects.filter(status=ManifestStatus.APPROVED).order_by("model_name", "version"),
        required=False,
        help_text="Optional: the approved manifest it replaces (retired when this is executed).",
    )

    def payload(self) -> dict:
        data = self.cleaned_data
        return {
            "candidate": data["candidate"].pk,
            "replaces": data["replaces"].pk if data.get("replaces") else None,
            "reason": data["reason"],
        }


class ModelRetirementForm(ProposalForm):
    proposal_type = ProposalType.MODEL_RETIREMENT
    field_order = ["title", "manifest", "replacement", "reason", "description"]
    manifest = ManifestChoiceField(
        queryset=Manifest.objects.filter(status=ManifestStatus.APPROVED).order_by("model_name", "version"),
        help_text="The approved manifest to retire.",
    )
    replacement = ManifestChoiceField(
        queryset=Manifest.objects.filter(status=ManifestStatus.APPROVED).order_by("model_name", "version"),
        required=False,
        help_text="Optional: the approved manifest nodes should use instead.",
    )

    def payload(self) -> dict:
        data = self.cleaned_data
        return {
            "manifest": data["manifest"].pk,
            "replacement": data["replacement"].pk if data.get("replacement") else None,
            "reason": data["reason"],
        }


class ParameterChangeForm(ProposalForm):
    proposal_type = ProposalType.PARAMETER_CHANGE
    field_order = ["title", "parameter", "value", "reason", "description"]
    parameter = forms.ChoiceField(
        choices=[(d.name, f"{d.name} ({d.minimum}–{d.maximum} {d.unit})") for d in PARAMETER_DEFINITIONS]
    )
    value = forms.IntegerField(help_text="The proposed value; it must be within the parameter's bounds.")

    def payload(self) -> dict:
        data = self.cleaned_data
        return {"parameter": data["parameter"], "value": data["value"], "reason": data["reason"]}


PROPOSAL_FORMS: dict[str, type[ProposalForm]] = {
    ProposalType.MODEL_ADOPTION: ModelAdoptionForm,
    ProposalType.MODEL_RETIREMENT: ModelRetirementForm,
    ProposalType.PARAMETER_CHANGE: ParameterChangeForm,
}


class VoteForm(DomainErrorFormMixin, forms.Form):
    choice = forms.ChoiceField(choices=VoteChoice.choices, widget=forms.RadioSelect)
    reason = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2}))


class CancelForm(DomainErrorFormMixin, forms.Form):
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


class ProposalFilterForm(forms.Form):
    type = forms.ChoiceField(choices=[("", "Any type"), *ProposalType.choices], required=False)
    state = forms.ChoiceField(choices=[("", "Any state"), *ProposalState.choices], required=False)
