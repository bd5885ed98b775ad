"""HTML views of inference (the serving JSON is in `inference.api.serving_views`, the /api/v1 resources in
`inference.api.views`)."""
