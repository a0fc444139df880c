"""Shared test set-up: seeds, caches in a temporary folder, the path to ../shared/data."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BAYESRAD_SHARED_DATA", REPO.parent / "shared" / "data"))

# Libraries that write caches under ~ or the working directory write here instead.
_CACHE = Path(tempfile.mkdtemp(prefix="bayesrad-test-cache-"))
for var in ("NILEARN_DATA", "SCIKIT_LEARN_DATA", "MPLCONFIGDIR", "NUMBA_CACHE_DIR"):
    os.environ.setdefault(var, str(_CACHE / var.lower()))
os.environ.setdefault("MPLBACKEND", "Agg")

# Under pytest-xdist (``make test`` runs one worker per core), each worker keeps to one thread:
# two workers with a thread pool per core each would oversubscribe the cores and run slower
# than one. Set before torch or numpy's BLAS start their pools (notebook kernels inherit it).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # torch is a core dependency; this only keeps collection robust
        pass
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real public data). Tests that need it fail loudly if it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}; set BAYESRAD_SHARED_DATA")
    return SHARED_DATA
