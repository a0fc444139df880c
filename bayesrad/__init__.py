"""bayesrad: Bayesian networks over multimodal oncology data."""

from bayesrad import errors
from bayesrad.data import Cohort, ColumnType

__version__ = "0.1.0"


def simulate(*args, **kwargs):
    """Simulate a multimodal cohort with known ground truth (see ``bayesrad.data.simulate``)."""
    from bayesrad.data.simulate import simulate as _simulate

    return _simulate(*args, **kwargs)


__all__ = ["Cohort", "ColumnType", "errors", "simulate", "__version__"]
