"""The graph-structured Bayesian model: node families compiled to Pyro and NumPyro.

Users call ``HybridBN``; a fitted ``Preprocessor`` can be passed to ``HybridBN.fit`` to keep
a fixed scale (simulation-based calibration). The compiler's pieces (``compile.make_model``,
``compile.Layout``, ``compile.Backend``, ``design.Design``) are imported from their modules.

The public names load on first use, so that the numpy-only modules (``logistic``,
``factors``) can be imported by the metrics without pulling in torch and Pyro.
"""

__all__ = ["HybridBN", "Preprocessor"]

_LAZY = {"HybridBN": "bayesrad.model.hybrid", "Preprocessor": "bayesrad.model.design"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bayesrad.model' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
