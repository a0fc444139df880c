"""The graph-structured Bayesian model: node families compiled to Pyro and NumPyro."""

from bayesrad.model.compile import Backend, Layout, make_model
from bayesrad.model.design import Design, Preprocessor
from bayesrad.model.hybrid import HybridBN

__all__ = ["HybridBN", "Backend", "Layout", "make_model", "Design", "Preprocessor"]
