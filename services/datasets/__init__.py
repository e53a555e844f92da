"""Datasets from the logs: replay requests through the pipeline, export datasets to files."""
