"""Reads of the dashboards app, one module per panel."""
