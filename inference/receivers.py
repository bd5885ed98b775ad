"""Inference's answers to what governance announces (connected in `InferenceConfig.ready`)."""


def candidate_benchmark_ensure(sender, *, manifest_id: int, actor, **kwargs) -> None:
    """A model adoption proposal opened: voters should see both sides measured.

    Queues the candidate's benchmark, and the approved model's it is compared
    with when that one has none (each runs after commit).
    """
    from inference.selectors import benchmark_comparison
    from inference.services import benchmark_ensure
    from registry.models import Manifest

    candidate = Manifest.objects.get(pk=manifest_id)
    benchmark_ensure(manifest=candidate, actor=actor)
    approved = benchmark_comparison(candidate).approved
    if approved is not None:
        benchmark_ensure(manifest=approved, actor=actor)
