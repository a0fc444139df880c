"""Explanations taken from the graph (Shapley over evidence, graph views, what-if curves)
and model-agnostic ones (PDP/ICE, ALE, SHAP, LIME) behind one interface."""

from bayesrad.explain.shapley import exact_from_values, shapley

__all__ = ["shapley", "exact_from_values"]
