"""Evaluation: feature networks, metrics, reference classifiers."""
