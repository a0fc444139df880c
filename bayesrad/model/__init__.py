"""The graph-structured Bayesian model: node families compiled to Pyro and NumPyro.

Users call ``HybridBN``; a fitted ``Preprocessor`` can be passed to ``HybridBN.fit`` to keep
a fixed scale (simulation-based calibration). The compiler's pieces (``compile.make_model``,
``compile.Layout``, ``compile.Backend``, ``design.Design``) are imported from their modules.
"""

from bayesrad.model.design import Preprocessor
from bayesrad.model.hybrid import HybridBN

__all__ = ["HybridBN", "Preprocessor"]
