"""Fuzz every reader: N mutated or random inputs each (default 10,000), counted by outcome.

Readers: clinical CSV, manifest CSV, cohort.yaml, graph YAML, radiomics settings YAML and a
saved model directory (one of its four files mutated). Each input must load or raise a
``BayesradError``; ``UNHANDLED`` counts are bugs (examples of each are recorded). Inputs:
byte mutations (replace / insert / delete / truncate, 1-6 per input) of a valid seed file,
and 1 in 10 arbitrary bytes. Seeded, so a run is reproducible.

    PYTHONPATH=$PWD python benchmarks/fuzz.py [--n 10000] [--only graph_yaml]
writes benchmarks/results/fuzz.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the readers and seeds shared with the tests
sys.path.insert(0, str(HERE))

import fuzz_targets as ft  # noqa: E402
from _machine import machine_info  # noqa: E402


def _edits(rng: np.random.Generator) -> list[tuple[int, int, int]]:
    return [(int(rng.integers(0, 10**6)), int(rng.integers(0, 256)), int(rng.integers(0, 4)))
            for _ in range(int(rng.integers(1, 7)))]


def run(n: int, only: str | None, seed: int = 0) -> dict:
    import torch

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bayesrad-fuzz-"))
    readers = {
        "clinical_csv": (ft.read_clinical, ft.CLINICAL),
        "manifest_csv": (ft.read_manifest, ft.MANIFEST),
        "cohort_yaml": (ft.read_cohort_yaml, ft.cohort_yaml_seed()),
        "graph_yaml": (ft.read_graph_yaml, ft.GRAPH_YAML),
        "radiomics_settings_yaml": (ft.read_radiomics_yaml, ft.RADIOMICS_YAML),
        "model_directory": (None, None),
    }
    results = {}
    for name, (read, seed_bytes) in readers.items():
        if only and name != only:
            continue
        rng = np.random.default_rng(seed)
        counts: Counter = Counter()
        examples: dict[str, str] = {}
        start = time.perf_counter()
        model_seed = ft.saved_model(root / "model-seed") if name == "model_directory" else None
        for i in range(n):
            edits = _edits(rng)
            if name == "model_directory":
                which = int(rng.integers(0, 4))
                result = ft.outcome(lambda: ft.read_model_dir(model_seed, which, edits, root / "case"))
            else:
                data = (rng.bytes(int(rng.integers(0, 300))) if rng.random() < 0.1
                        else ft.mutate(seed_bytes, edits))
                result = ft.outcome(lambda: read(data, root / "case"))
            key = result.split(":")[0] + ":" + result.split(":")[1] if ":" in result else result
            counts[key] += 1
            if result.startswith("UNHANDLED") and key not in examples:
                examples[key] = result
        results[name] = {"n": n, "outcomes": dict(counts.most_common()),
                         "unhandled": sum(v for k, v in counts.items() if k.startswith("UNHANDLED")),
                         "unhandled_examples": examples,
                         "seconds": round(time.perf_counter() - start, 1)}
        print(name, results[name]["outcomes"], f"{results[name]['seconds']} s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="examples per reader")
    parser.add_argument("--only", default=None, help="one reader")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fuzz.json")
    args = parser.parse_args()
    results = run(args.n, args.only)
    out = {"benchmark": "fuzz", "examples_per_reader": args.n, "machine": machine_info(),
           "readers": results}
    if args.only and args.out.exists():  # update one reader's section, keep the others
        previous = json.loads(args.out.read_text())
        previous["readers"].update(results)
        previous["machine"] = out["machine"]
        out = previous
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
