"""Benchmarks: ``python -m benchmarks.<name>`` writes ``benchmarks/results/<device>/<name>.{json,md}``."""
