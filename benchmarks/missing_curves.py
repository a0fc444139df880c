"""Missing-modality curves on simulated cohorts: bayesrad against early and late fusion.

For the ``incomplete_multimodal`` scenario (target ``response``, the 200-gene block) and the
``radiotherapy`` scenario (target ``local_control``, the radiomics block), a share of 0-80% of
the test patients loses the block (MCAR), through ``bayesrad.evaluate.missing_modality_curve``
(every model fitted once per fold on the same folds). Writes
``benchmarks/results/missing_curves.json``: AUC and ECE with bootstrap 95% CIs per model and
share. Usage: ``python benchmarks/missing_curves.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "missing_curves.json"
SETTINGS = {"incomplete_multimodal": ("response", "genes"),
            "radiotherapy": ("local_control", "radiomics")}


def main() -> None:
    import torch

    import bayesrad
    from bayesrad.evaluate.harness import missing_modality_curve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 folds, shares 0 / 0.4 / 0.8")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = {"machine": machine_info(), "quick": args.quick}
    fractions = (0.0, 0.4, 0.8) if args.quick else (0.0, 0.2, 0.4, 0.6, 0.8)
    for scenario, (target, block) in SETTINGS.items():
        cohort = bayesrad.simulate(scenario, n_patients=300, seed=0).cohort
        blocks = {b: f for b, f in cohort.blocks.items()}
        # the target's later outcomes are not features: keep the target alone in its block
        outcome = blocks["outcome"][[target]]
        blocks["outcome"] = outcome
        start = time.perf_counter()
        curves = missing_modality_curve(blocks, target, block, models=["bayesrad", "early_mean", "late"],
                                        fractions=fractions, cv="3x1" if args.quick else "5x1",
                                        seed=0, n_boot=500)
        out[scenario] = {"target": target, "block": block, "seconds": time.perf_counter() - start,
                         "rows": curves.to_dict(orient="records")}
        for row in curves[curves.metric == "auc"].itertuples():
            print(f"{scenario:22s} {row.model:10s} share {row.fraction:.1f}  AUC {row.estimate:.3f} "
                  f"[{row.ci_low:.3f}, {row.ci_high:.3f}]", flush=True)
        RESULTS.write_text(json.dumps(out, indent=1, default=float))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
