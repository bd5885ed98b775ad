"""Inference's answers to what governance announces (connected in `InferenceConfig.ready`)."""


def candidate_benchmark_ensure(sender, *, manifest_id: int, actor, **kwargs) -> None:
    """A model adoption proposal opened: make sure its candidate is benchmarked."""
    from inference.services import benchmark_ensure
    from registry.models import Manifest

    benchmark_ensure(manifest=Manifest.objects.get(pk=manifest_id), actor=actor)
