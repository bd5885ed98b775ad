"""The dashboards' filter forms: which window, metric, model and node a panel shows."""

from django import forms

from dashboards.selectors.latency import WINDOWS

METRIC_CHOICES = [
    ("e2e", "End to end"),
    ("queue", "Queue time"),
    ("ttft", "Time to first token"),
    ("cpu", "CPU per request (cost)"),
]


class OverviewForm(forms.Form):
    window = forms.ChoiceField(choices=[(w.name, w.label) for w in WINDOWS.values()], required=False, label="Window")
    metric = forms.ChoiceField(choices=METRIC_CHOICES, required=False, label="Chart")
    end = forms.DateTimeField(required=False, widget=forms.HiddenInput)


class NodeLatencyForm(forms.Form):
    """Which model, which node (or the whole network) and which window the node latency panel shows."""

    model = forms.ChoiceField(required=False, label="Model")
    node = forms.ChoiceField(required=False, label="Nodes")
    window = forms.ChoiceField(choices=[(w.name, w.label) for w in WINDOWS.values()], required=False, label="Window")
    end = forms.DateTimeField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, models: list[str], nodes: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(model, model) for model in models]
        self.fields["node"].choices = [("", "Whole network"), *((node, node) for node in nodes)]
