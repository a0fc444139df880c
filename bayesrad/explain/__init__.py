"""Explanations taken from the graph (Shapley over evidence, graph views, what-if curves)
and model-agnostic ones (PDP/ICE, ALE, SHAP, LIME) behind one interface."""

from bayesrad.explain.agnostic import ale, explain_model, predict_function
from bayesrad.explain.graph_views import (edge_strengths, markov_blanket, path_contributions,
                                          sentence)
from bayesrad.explain.images import image_saliency, link_saliency
from bayesrad.explain.shapley import exact_from_values, shapley
from bayesrad.explain.whatif import what_if

__all__ = ["shapley", "exact_from_values", "markov_blanket", "edge_strengths",
           "path_contributions", "sentence", "what_if", "explain_model", "ale",
           "predict_function", "image_saliency", "link_saliency"]
