"""Gene expression block shared by scenarios: negative-binomial counts in known modules."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesrad.data.simulate._engine import NetworkSampler


def add_gene_block(g: NetworkSampler, modules: dict[str, dict[str, float]], n_genes: int = 300,
                   genes_per_module: int = 40) -> pd.Series:
    """Add the ``genes`` latent (one dimension per module) and its count columns.

    ``modules``: module name -> parent coefficients of that module's latent dimension
    (e.g. ``{"hypoxia": {"radiomics[1]": 0.8}}``). Each module's genes load only on their
    dimension (loadings 0.4-1.0 on the log-mean scale, a fifth of them negative); the other
    genes load on none. Gene names ``GENE0001``... are shuffled so modules are not contiguous.
    Baseline means span 5-2000 counts at size factor 1; dispersion 0.05-0.4.
    Returns gene -> module id (dimension index, -1 = no module).
    """
    rng = g.rng
    k = len(modules)
    g.latent("genes", "genes", k, coefs=list(modules.values()))
    n_module_genes = min(genes_per_module * k, n_genes)
    module_of = np.full(n_genes, -1)
    module_of[:n_module_genes] = np.repeat(np.arange(k), n_module_genes // k + 1)[:n_module_genes]
    module_of = module_of[rng.permutation(n_genes)]
    loadings = np.zeros((n_genes, k))
    in_module = module_of >= 0
    sign = np.where(rng.random(n_genes) < 0.2, -1.0, 1.0)
    loadings[in_module, module_of[in_module]] = (rng.uniform(0.4, 1.0, n_genes) * sign)[in_module]
    names = [f"GENE{i + 1:04d}" for i in range(n_genes)]
    intercepts = rng.uniform(np.log(5.0), np.log(2000.0), n_genes)
    sds = np.full(n_genes, 0.2)
    dispersion = rng.uniform(0.05, 0.4, n_genes)
    size_factor = np.exp(rng.normal(0.0, 0.25, g.n))
    g.count_factor_block("genes", names, intercepts, loadings, sds, dispersion, size_factor)
    return pd.Series(module_of, index=pd.Index(names, name="gene"), name="module")
