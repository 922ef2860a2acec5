"""Evaluation: labels, matching, metrics, missed objects and the audit."""
