"""Every name bayesrad exports resolves, and importing bayesrad stays light."""

from __future__ import annotations

import subprocess
import sys

import bayesrad


def test_every_exported_name_resolves():
    for name in bayesrad.__all__:
        assert getattr(bayesrad, name) is not None, name


def test_import_does_not_load_heavy_stacks():
    code = "import sys, bayesrad; print(','.join(m for m in ('torch', 'pgmpy', 'radiomics', 'monai', 'jax') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"import bayesrad loaded {loaded}"
