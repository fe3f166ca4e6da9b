"""Metrics, generation-quality scores, downstream segmentation and the report."""
