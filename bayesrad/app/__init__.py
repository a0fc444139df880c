"""The clinician's browser app over a fitted ``HybridBN`` (Dash + dash-cytoscape).

``build_app(model, cohort=None, target=None)`` returns a ``dash.Dash`` app: the network
(colour by block, edge width by |coefficient|, dashed when bootstrap confidence < 0.5; click a
node for its parents' effects with 90% intervals), a patient panel (a cohort patient or a blank
one, typed inputs per node, missing modalities marked), a what-if slider on a continuous node
(observe or do) answered in the target's terms (a probability, class bars or a survival curve
with its band and median, each with a 90% interval), a counterfactual tab for cohort patients
whose outcome is recorded, and an HTML report export with a model card.
Nothing is written to disk: the report goes to the browser as a download.
"""

from __future__ import annotations

from bayesrad.app.core import (AppState, build_app, counterfactual_answer, model_card,
                               report_html, whatif_answer)

__all__ = ["AppState", "build_app", "whatif_answer", "counterfactual_answer", "report_html",
           "model_card"]
