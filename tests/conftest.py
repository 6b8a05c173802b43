"""Shared test configuration.

* Hypothesis profiles: ``ci`` (default; derandomized so CI is reproducible) and
  ``dev`` (random, more examples): ``HYPOTHESIS_PROFILE=dev pytest``.
* ``gpu`` tests are skipped when CuPy sees no CUDA device; ``slow`` tests are
  deselected by default (pyproject ``addopts``) and run with ``pytest -m slow``.
"""
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.getenv("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
    if not any("gpu" in item.keywords for item in items):
        return
    from fast.cuda import gpu_available

    if gpu_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU visible to CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
