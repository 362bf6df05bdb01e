"""Benchmarks: ``python -m bench`` (``make bench``) measures and prints a Markdown report.

Benchmarks report, they do not pass or fail a build: tests stay deterministic. Every figure in the
report comes from this one run; ratios are taken between runs interleaved in the same invocation.
"""
