"""Time to simulate and write each scenario (default 200 patients, 48^3 volumes).

Usage: ``python benchmarks/simulate.py [--quick] [--n-patients N] [--image-size S]``.
Writes ``benchmarks/results/simulate.json``: per scenario the seconds for the tabular part
alone (``simulate`` without ``out``) and for simulating plus writing every file, the files and
bytes written, the ratio of the two times (measured in the same run), and the CPU seconds of
the written run (wall time varies with other jobs on shared cores; the load average is saved). The issue's target:
``radiotherapy`` with 200 patients, simulated and written, under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


from bayesrad.data.simulate import SCENARIOS, simulate
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).resolve().parent / "results" / "simulate.json"
RADIOTHERAPY_TARGET_S = 60.0


def _folder_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def run(n_patients: int, image_size: int, seed: int = 0) -> dict:
    rows = {}
    for scenario in SCENARIOS:
        start = time.perf_counter()
        simulate(scenario, n_patients=n_patients, seed=seed)
        tabular_s = time.perf_counter() - start
        out = Path(tempfile.mkdtemp(prefix=f"bayesrad_bench_{scenario}_"))
        try:
            start, cpu_start = time.perf_counter(), time.process_time()
            sim = simulate(scenario, n_patients=n_patients, seed=seed, out=out, image_size=image_size)
            written_s = time.perf_counter() - start
            written_cpu_s = time.process_time() - cpu_start
            n_files, n_bytes = _folder_size(out)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        rows[scenario] = {
            "tabular_s": round(tabular_s, 3),
            "simulate_and_write_s": round(written_s, 3),
            # CPU seconds of this process: robust to other jobs sharing the cores, unlike wall time.
            "simulate_and_write_cpu_s": round(written_cpu_s, 3),
            "write_over_tabular": round(written_s / tabular_s, 1),
            "per_patient_ms": round(1000 * written_s / n_patients, 1),
            "images": int(len(sim.cohort.images)),
            "files": n_files,
            "megabytes": round(n_bytes / 1e6, 1),
        }
        print(f"{scenario:24s} tabular {tabular_s:6.2f} s   simulate+write {written_s:6.2f} s   "
              f"{n_files} files, {n_bytes / 1e6:.0f} MB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 patients, 32^3 volumes")
    parser.add_argument("--n-patients", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=48)
    args = parser.parse_args()
    n_patients, image_size = (50, 32) if args.quick else (args.n_patients, args.image_size)
    rows = run(n_patients, image_size)
    result = {
        "benchmark": "simulate",
        "n_patients": n_patients,
        "image_size": image_size,
        "scenarios": rows,
        "radiotherapy_target_s": RADIOTHERAPY_TARGET_S,
        "radiotherapy_within_target": rows["radiotherapy"]["simulate_and_write_s"] < RADIOTHERAPY_TARGET_S,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
