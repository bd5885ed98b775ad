"""The OpenAPI schema view, one generation at a time.

drf-spectacular loads its extensions lazily and without a lock the first
time a schema is generated in a process (`OpenApiGeneratorExtension._load_class`
rewrites a class attribute): two first requests at once can both fail with
a 500. The schema is rarely asked for, so generations simply take turns.
"""

import threading

from drf_spectacular.views import SpectacularAPIView

_generation = threading.Lock()


class SchemaApi(SpectacularAPIView):
    def get(self, request, *args, **kwargs):
        with _generation:
            return super().get(request, *args, **kwargs)
