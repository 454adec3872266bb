"""Evaluation helpers: the CPU decoder and the charts."""
