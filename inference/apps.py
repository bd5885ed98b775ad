from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class InferenceConfig(AppConfig):
    name = "inference"

    def ready(self) -> None:
        from governance.models import GovernedParameter
        from governance.signals import candidate_benchmark_requested
        from inference.receivers import candidate_benchmark_ensure
        from inference.selectors import serving_reads_invalidate
        from registry.models import ApprovedSet

        candidate_benchmark_requested.connect(candidate_benchmark_ensure, dispatch_uid="inference-candidate-benchmark")

        for model in (ApprovedSet, GovernedParameter):
            post_save.connect(serving_reads_invalidate, sender=model, dispatch_uid=f"inference-reads-{model.__name__}")
            post_delete.connect(
                serving_reads_invalidate, sender=model, dispatch_uid=f"inference-reads-d-{model.__name__}"
            )
