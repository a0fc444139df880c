"""benchmarks/settings.py loaded as a module (it is a script, not part of the package) for the
tests of its cheap helpers."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def settings():
    spec = importlib.util.spec_from_file_location("bench_settings", ROOT / "benchmarks" / "settings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
