"""Locust suite over gRPC: user, load shapes, SLO thresholds, Triton metrics and the merged report."""
