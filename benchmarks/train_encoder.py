"""Train the package's own small CT+PET encoder (``bayesrad/imaging/pretrained/encoder_small``, package data) and write its model card.

Data: simulated radiotherapy patients (``bayesrad.simulate``, CT + PET + GTV mask) plus the real
soft-tissue sarcoma patients STS_001-003 of the IBSI validation set in ``../shared/data``
(CT + PET in SUV + GTV). No labels are used; no weights are downloaded.

    python benchmarks/train_encoder.py [--steps 300] [--patients 96] [--out bayesrad/imaging/pretrained/encoder_small]
    python benchmarks/train_encoder.py --card-only   # rewrite MODEL_CARD.md, e.g. after benchmarks/imaging.py
    python benchmarks/train_encoder.py --quick       # smoke run into a temporary folder (make benchmarks)

The card quotes the linear-probe figures of ``benchmarks/results/imaging.json`` when that file
was measured on these very weights (same SHA-256 of ``encoder.safetensors``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from bayesrad.data.cohort import Cohort
from bayesrad.data.simulate import simulate
from bayesrad.imaging.pretrain import AUGMENTATION, pretrain_volumes
from bayesrad.imaging.transforms import PreprocessConfig, preprocess_cohort

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "imaging.json"
# Pretraining settings of the shipped encoder, also used by benchmarks/imaging.py for its in-run
# comparison. Chosen on the seed-2024 training cohort probed on a seed-0 cohort: 150 steps of
# inpainting alone gave a probe R^2 of 0.57 (aggressiveness 0.23), 300 steps 0.75 (0.57), 300
# steps with the contrastive term 0.96 (0.95).
PRETRAIN = dict(encoder="resnet", width=8, steps=300, batch_size=8, lr=2e-3, mask_ratio=0.5, patch_size=8,
                contrastive_weight=0.5)
CONFIG = PreprocessConfig(modalities=("CT", "PET"), size=32, spacing_mm=3.0, margin_mm=10.0)
STS = ROOT / ".." / "shared" / "data" / "radiomics_reference" / "ibsi" / "data_sets" / "ibsi_validation" / "nifti"


def sarcoma_cohort() -> Cohort:
    """The three real IBSI sarcoma patients with CT and PET, each with its own GTV mask."""
    rows = []
    for patient in sorted(p.name for p in STS.glob("STS_*")):
        for modality, units in (("CT", "HU"), ("PET", "SUV")):
            rows.append(dict(patient_id=patient, modality=modality, path=str((STS / patient / f"{modality}_image.nii.gz").resolve()),
                             mask_path=str((STS / patient / f"{modality}_mask.nii.gz").resolve()), mask_labels="",
                             roi="gtv", frame_times="", units=units))
    return Cohort({}, pd.DataFrame(rows), name="ibsi_sts_real")


def weights_sha256(encoder_dir: Path) -> str:
    """SHA-256 of ``encoder.safetensors`` (ties measured figures to the weights they were measured on)."""
    return hashlib.sha256((Path(encoder_dir) / "encoder.safetensors").read_bytes()).hexdigest()


def _measured(out: Path) -> str:
    """The card's "Measured" lines from ``imaging.json``, if it probed these weights."""
    if not RESULTS.is_file():
        return "- Not yet measured: run `python benchmarks/imaging.py`, then `python benchmarks/train_encoder.py --card-only`."
    probe = json.loads(RESULTS.read_text()).get("probe", {})
    small = probe.get("encoder_small")
    if not small or small.get("weights_sha256") != weights_sha256(out):
        return ("- `benchmarks/results/imaging.json` was measured on other weights: re-run `python benchmarks/imaging.py`, "
                "then `python benchmarks/train_encoder.py --card-only`.")
    (size, aggr), (size_sd, aggr_sd) = small["mean"], small["sd"]
    rnd, pre = probe["r2_random_mean_over_targets"], probe["r2_pretrained_mean_over_targets"]
    return (f"- Linear probe of the embeddings of a simulated radiotherapy cohort it never saw ({probe['scenario']}, "
            f"{probe['n_patients']} patients with images) against the true latent tumour phenotype.\n"
            f"- Protocol: {probe['protocol']}.\n"
            f"- This encoder: R^2 of tumour size {size:.2f} (sd {size_sd:.2f} over repeats), of aggressiveness "
            f"{aggr:.2f} (sd {aggr_sd:.2f}); mean {small['mean_over_targets']:.2f} (target >= 0.6).\n"
            f"- Same run, same architecture: random weights {rnd['mean']:.2f} (sd {rnd['sd']:.2f} over {rnd['n']} "
            f"initialisations); pretrained with these settings on that cohort's own images {pre['mean']:.2f} "
            f"(sd {pre['sd']:.2f}).")


def write_model_card(out: Path, record: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = record["loss_history"]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(losses, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(f"encoder_small: {record['objective']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png", dpi=90)
    plt.close(fig)
    pre, train = record["preprocessing"], record["pretraining"]
    k = max(1, len(losses) // 10)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    size_kb = (out / "encoder.safetensors").stat().st_size / 1024
    seconds = record["training_seconds"]
    cw = train["contrastive_weight"]
    contrastive = (f"; plus {cw} x NT-Xent (SimCLR, temperature 0.1) between the pooled embeddings of two "
                   f"augmented, differently masked views of each volume" if cw > 0 else "")
    data = "\n".join(f"- `{d['cohort']}`: {d['n_patients']} patients" for d in record["data"])
    card = f"""# encoder_small: a CT+PET 3D encoder pretrained by bayesrad itself

## What it is
A MONAI 3D ResNet (basic blocks, one per stage, widths {train['width']}-{8 * train['width']}) that maps a
2-channel (CT, PET) {pre['size']}^3 volume at {pre['spacing_mm']} mm to a {record['feature_dim']}-dimensional
pooled embedding. Weights: `encoder.safetensors` ({size_kb:.0f} KiB, loaded without unpickling);
architecture and preprocessing: `encoder.json`. Produced by `python benchmarks/train_encoder.py`
({seconds / 60:.1f} min on {record['trained_on']['device']}, {platform.processor() or platform.machine()}).

## Data (no labels used)
{data}

Simulated patients come from `bayesrad.simulate("radiotherapy", image_size=48)` (3 mm grid);
the real patients are STS_001-003 of the IBSI validation set (soft-tissue sarcoma, CC BY 3.0),
CT and PET (SUV) with their GTV masks.

## Preprocessing (bayesrad.imaging.transforms, MONAI dictionary transforms)
1. Orientation to RAS; PET and mask resampled onto the CT grid (`ResampleToMatchd`).
2. Crop around the GTV, isotropic resampling to {pre['spacing_mm']} mm (`Spacingd`).
3. CT window {pre['ct_window_hu'][0]:.0f} to {pre['ct_window_hu'][1]:.0f} HU -> [0, 1]; PET SUV / {pre['suv_max']:.0f}, clipped to [0, 1].
4. Crop around the mask with a {pre['margin_mm']:.0f} mm margin, pad/crop to {pre['size']}^3 (zero outside), channels stacked (CT, PET).

## Training
Masked-volume inpainting: {train['mask_ratio']:.0%} of the {train['patch_size']}^3-voxel cubes hidden, MSE on hidden
voxels, light trilinear decoder{contrastive}; AdamW lr {train['lr']}, cosine decay, batch {train['batch_size']},
{train['steps']} steps, seed {train['seed']}, {train['n_volumes']} volumes.
Augmentation (MONAI, each physically plausible):
{chr(10).join('- ' + a for a in AUGMENTATION)}

Loss: {first:.4f} (mean of first {k} steps) -> {last:.4f} (last {k}); curve in `loss_curve.png`,
values in `loss_curve.csv`.

## Intended use
Embeddings of a tumour-centred CT+PET volume as the `deep` block of a bayesrad cohort
(`bayesrad.imaging.embed_cohort(cohort, packaged_encoder("encoder_small"), pca_dim=...)`), for demos
and tests. For a real cohort, pretrain an encoder on it (`bayesrad.imaging.pretrain_encoder`).

## Limits
- Tiny: trained for minutes on CPU, mostly on simulated phantoms and three real patients. Not a
  clinical model; do not read its embeddings as validated imaging biomarkers.
- Needs both CT and PET and a tumour mask; other modalities need their own encoder.
- A {pre['size']}^3 cube of {pre['spacing_mm']} mm covers {pre['size'] * pre['spacing_mm']:.0f} mm: larger tumours are cut to the cube.
- The probe figures below come from simulated tumours only: for the real patients no true phenotype
  is known, so nothing here says what the embeddings capture on real images.

## Measured (`python benchmarks/imaging.py`, `benchmarks/results/imaging.json`)
{_measured(out)}
"""
    (out / "MODEL_CARD.md").write_text(card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=PRETRAIN["steps"])
    parser.add_argument("--patients", type=int, default=96)
    parser.add_argument("--out", default=str(ROOT / "bayesrad" / "imaging" / "pretrained" / "encoder_small"))
    parser.add_argument("--card-only", action="store_true", help="only rewrite MODEL_CARD.md from encoder.json")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (20 steps, 24 patients) into a temporary folder; the shipped encoder is untouched")
    args = parser.parse_args()
    if args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            train(20, 24, Path(tmp) / "encoder_quick")
        return
    if args.card_only:
        write_model_card(Path(args.out), json.loads((Path(args.out) / "encoder.json").read_text()))
        return
    train(args.steps, args.patients, Path(args.out))


def train(steps: int, patients: int, out: Path) -> None:
    """Pretrain on ``patients`` simulated + the real sarcoma patients for ``steps``; write encoder and card to ``out``."""
    torch.set_num_threads(1)  # tiny 3D convolutions: more threads only contend on a shared machine
    config = CONFIG
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sim = simulate("radiotherapy", n_patients=patients, seed=2024, out=tmp, image_size=48)
        sim_volumes, _, sim_ids = preprocess_cohort(sim.cohort, config)
    real = sarcoma_cohort()
    real_volumes, _, real_ids = preprocess_cohort(real, config)
    volumes = torch.cat([sim_volumes, real_volumes])
    data = [{"cohort": "simulated_radiotherapy (seed 2024)", "n_patients": len(sim_ids)},
            {"cohort": real.name, "n_patients": len(real_ids)}]
    result = pretrain_volumes(volumes, out, **{**PRETRAIN, "steps": steps}, seed=0, keep_checkpoint=False,
                              device="cpu", metadata={"preprocessing": config.to_dict(), "data": data})
    seconds = time.perf_counter() - t0
    path = out / "encoder.json"
    record = {**json.loads(path.read_text()), "training_seconds": seconds}
    path.write_text(json.dumps(record, indent=2))
    write_model_card(out, record)
    print(f"wrote {out}: {len(volumes)} volumes, loss {result.loss_history[0]:.4f} -> {result.loss_history[-1]:.4f}, "
          f"{seconds:.0f} s")


if __name__ == "__main__":
    main()
