"""Quality and speed of bayesrad.imaging; writes benchmarks/results/imaging.json.

1. probe: radiotherapy simulator, CT+PET. Linear (ridge, 5-fold CV) probe R^2 of the true latent
   tumour phenotype (size, aggressiveness) from the pooled embeddings of the same encoder
   (same initial weights) before and after masked-inpainting pretraining, in one run; also
   the shipped ``models/encoder_small`` (pretrained on another simulated cohort + real patients).
2. mil: liver_multiphase simulator, three CT phases, three classes from the patient label only.
   Balanced accuracy of attention-MIL vs the cohort's radiomics block + logistic regression on
   the same stratified folds.
3. saliency: glioma_pet simulator, MR_T1C + static PET. A ridge head on the embeddings predicts
   the aggressiveness latent; |gradient x input| through head and encoder gives a voxel heatmap,
   resampled onto the original image grid and compared with the true aggressive subregion
   (ROC AUC over the volume and within the lesion).
4. real: IBSI sarcoma patients (real CT, PET, MR): preprocessing, embedding, and pretraining
   loss falling on them.
5. throughput: volumes/s of embedding and of pretraining steps on this machine (CPU here).

    python benchmarks/imaging.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bayesrad.data.cohort import Cohort
from bayesrad.data.simulate import simulate
from bayesrad.imaging import (
    AttentionMILClassifier, ImagePredictor, PreprocessConfig, build_encoder, embed_volumes, gradient_saliency,
    heatmap_auc, heatmap_to_image, load_encoder, preprocess_cohort, preprocess_patient, pretrain_volumes, save_heatmap,
)
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STS = ROOT / ".." / "shared" / "data" / "radiomics_reference" / "ibsi" / "data_sets" / "ibsi_validation" / "nifti"
ALPHAS = np.logspace(-2, 4, 13)


def probe_r2(features: np.ndarray, targets: np.ndarray, seed: int = 0) -> list[float]:
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS))
    pred = cross_val_predict(model, features, targets, cv=KFold(5, shuffle=True, random_state=seed))
    return [float(r2_score(targets[:, j], pred[:, j])) for j in range(targets.shape[1])]


def timed_embedding(encoder, volumes) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    features = embed_volumes(encoder, volumes, batch_size=16)
    return features, len(volumes) / (time.perf_counter() - t0)


def bench_probe(n: int, steps: int, width: int, tmp: Path) -> dict:
    config = PreprocessConfig(modalities=("CT", "PET"), size=32, spacing_mm=3.0, margin_mm=10.0)
    sim = simulate("radiotherapy", n_patients=n, seed=0, out=tmp / "rt", image_size=48)
    t0 = time.perf_counter()
    volumes, _, ids = preprocess_cohort(sim.cohort, config)
    preprocess_rate = len(ids) / (time.perf_counter() - t0)
    names = ["radiomics[0]", "radiomics[1]"]
    targets = sim.truth.latents.loc[ids, names].to_numpy()
    torch.manual_seed(0)
    random_encoder = build_encoder("resnet", 2, 32, width)
    random_features, embed_rate = timed_embedding(random_encoder, volumes)
    result = pretrain_volumes(volumes, tmp / "enc", encoder="resnet", width=width, steps=steps, batch_size=8, lr=2e-3,
                              mask_ratio=0.5, patch_size=8, seed=0, keep_checkpoint=False)
    pretrained_features, _ = timed_embedding(result.encoder, volumes)
    out = {
        "scenario": "radiotherapy", "n_patients": len(ids), "latents": ["size", "aggressiveness"],
        "encoder": f"resnet width {width}", "pretraining_steps": steps,
        "r2_random": probe_r2(random_features, targets), "r2_pretrained": probe_r2(pretrained_features, targets),
        "pretraining_loss_first_last": [float(np.mean(result.loss_history[:5])), float(np.mean(result.loss_history[-5:]))],
    }
    out["r2_random_mean"] = float(np.mean(out["r2_random"]))
    out["r2_pretrained_mean"] = float(np.mean(out["r2_pretrained"]))
    small = ROOT / "models" / "encoder_small"
    if (small / "encoder.safetensors").is_file():
        encoder, record = load_encoder(small)
        if record["preprocessing"] == config.to_dict():
            out["r2_encoder_small"] = probe_r2(embed_volumes(encoder, volumes), targets)
            out["r2_encoder_small_mean"] = float(np.mean(out["r2_encoder_small"]))
    throughput = {"preprocess_patients_per_s": preprocess_rate, "embed_volumes_per_s": embed_rate,
                  "pretrain_volumes_per_s": result.volumes_per_second, "volume": "2 x 32^3", "batch_pretrain": 8}
    return out, throughput


def bench_mil(n: int, epochs: int, tmp: Path) -> dict:
    # 2 mm: the lesion enhancement pattern is the signal, so the lesion must span many patches
    config = PreprocessConfig(modalities=("CT_arterial", "CT_portal", "CT_delayed"), size=32, spacing_mm=2.0, margin_mm=8.0)
    sim = simulate("liver_multiphase", n_patients=n, seed=1, out=tmp / "liver", image_size=48)
    volumes, _, ids = preprocess_cohort(sim.cohort, config)
    labels = sim.cohort.blocks["outcome"]["tumour_class"].reindex(ids)
    keep = labels.notna().to_numpy()
    volumes, ids, y = volumes[keep], [i for i, k in zip(ids, keep) if k], labels[keep].astype(str).to_numpy()
    radiomics = sim.cohort.blocks["radiomics"].reindex(ids)
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    mil_scores, radiomics_scores = [], []
    for train, test in folds.split(volumes, y):
        mil = AttentionMILClassifier(instance="patch", patch_size=8, embed_dim=32, attention_dim=16, epochs=epochs, seed=0)
        mil.fit(volumes[train], y[train])
        mil_scores.append(float(balanced_accuracy_score(y[test], mil.predict(volumes[test]))))
        fill = radiomics.iloc[train].mean()
        baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
        baseline.fit(radiomics.iloc[train].fillna(fill), y[train])
        radiomics_scores.append(float(balanced_accuracy_score(y[test], baseline.predict(radiomics.iloc[test].fillna(fill)))))
    attention = mil.attention(volumes[test[:1]])[0]
    return {
        "scenario": "liver_multiphase", "n_patients": len(ids), "classes": sorted(set(y)), "folds": 3,
        "instances": "8^3 patches of a 3 x 32^3 (2 mm) volume", "epochs": epochs,
        "balanced_accuracy_mil": mil_scores, "balanced_accuracy_radiomics_logistic": radiomics_scores,
        "mil_mean": float(np.mean(mil_scores)), "radiomics_logistic_mean": float(np.mean(radiomics_scores)),
        "mil_beats_baseline": bool(np.mean(mil_scores) > np.mean(radiomics_scores)),
        "radiomics_columns": list(radiomics.columns),
        "example_attention_max_over_uniform": float(attention.max() * len(attention)),
    }


def bench_saliency(n: int, width: int, tmp: Path) -> dict:
    config = PreprocessConfig(modalities=("MR_T1C", "PET"), size=32, spacing_mm=4.0, margin_mm=8.0)
    out_dir = tmp / "glioma"
    sim = simulate("glioma_pet", n_patients=n, seed=2, out=out_dir, image_size=48)
    volumes, masks, ids = preprocess_cohort(sim.cohort, config)
    target = sim.truth.latents.loc[ids, "radiomics[1]"].to_numpy()
    torch.manual_seed(0)
    encoder = build_encoder("resnet", 2, 32, width).eval()
    features = embed_volumes(encoder, volumes)
    n_train = int(0.7 * len(ids))
    head = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS)).fit(features[:n_train], target[:n_train])
    test_r2 = float(r2_score(target[n_train:], head.predict(features[n_train:])))
    predictor = ImagePredictor.from_sklearn(encoder, head)
    truth_table = pd.read_csv(out_dir / "truth" / "truth_images.csv")
    aucs, aucs_lesion = [], []
    for k, pid in enumerate(ids[n_train:]):
        vol = preprocess_patient(sim.cohort.images, pid, config)
        heat = gradient_saliency(predictor, vol.image, sigma_voxels=1.0)
        on_original = sitk.GetArrayFromImage(heatmap_to_image(heat, vol.affine, vol.reference))
        truth_path = truth_table.loc[truth_table.patient_id == pid, "path"].iloc[0]
        region = sitk.GetArrayFromImage(sitk.ReadImage(str(truth_path))) > 0
        lesion_row = sim.cohort.images[(sim.cohort.images.patient_id == pid) & (sim.cohort.images.modality == "PET")].iloc[0]
        lesion = sitk.GetArrayFromImage(sitk.ReadImage(lesion_row["mask_path"])) > 0
        if region.any() and not region.all():
            aucs.append(heatmap_auc(on_original, region))
        if (region & lesion).any() and (lesion & ~region).any():
            aucs_lesion.append(heatmap_auc(on_original, region, within=lesion))
        if k == 0:
            save_heatmap(heat, vol.affine, vol.reference, RESULTS, name="imaging_saliency_example",
                         title=f"{pid}: d(aggressiveness)/d(voxel)")
    return {
        "scenario": "glioma_pet", "n_patients": len(ids), "target": "aggressiveness latent (radiomics[1])",
        "method": "|gradient x input| through ridge head + encoder, resampled to the original grid",
        "head_test_r2": test_r2, "n_test": len(aucs),
        "auc_volume_mean": float(np.mean(aucs)), "auc_volume_min": float(np.min(aucs)),
        "auc_within_lesion_mean": float(np.mean(aucs_lesion)) if aucs_lesion else None,
        "example_png": "benchmarks/results/imaging_saliency_example.png",
        "caveat": ("the preprocessed cube is zero outside the lesion bounding box + margin, so the whole-volume AUC "
                   "mostly measures that the heatmap sits on the lesion; auc_within_lesion is the test of the "
                   "aggressive subregion itself"),
    }


def bench_real(steps: int, tmp: Path) -> dict:
    rows = []
    for patient in sorted(p.name for p in STS.glob("STS_*")):
        for modality in ("CT", "PET", "MR_T1"):
            rows.append(dict(patient_id=patient, modality=modality, path=str((STS / patient / f"{modality}_image.nii.gz").resolve()),
                             mask_path=str((STS / patient / f"{modality}_mask.nii.gz").resolve()), mask_labels="",
                             roi="gtv", frame_times="", units=""))
    cohort = Cohort({}, pd.DataFrame(rows), name="ibsi_sts")
    config = PreprocessConfig(modalities=("CT", "PET", "MR_T1"), size=32, spacing_mm=4.0, margin_mm=10.0)
    t0 = time.perf_counter()
    volumes, masks, ids = preprocess_cohort(cohort, config)
    seconds = time.perf_counter() - t0
    result = pretrain_volumes(volumes, tmp / "real_enc", width=8, steps=steps, batch_size=3, lr=2e-3, patch_size=8,
                              keep_checkpoint=False)
    features = embed_volumes(result.encoder, volumes)
    losses = result.loss_history
    return {
        "patients": ids, "channels": list(config.modalities), "preprocess_seconds_per_patient": seconds / len(ids),
        "embedding_shape": list(features.shape), "embedding_finite": bool(np.isfinite(features).all()),
        "pretraining_steps": steps, "loss_first5_mean": float(np.mean(losses[:5])), "loss_last5_mean": float(np.mean(losses[-5:])),
        "loss_falls": bool(np.mean(losses[-5:]) < np.mean(losses[:5])),
    }


def rerun_section(name: str, quick: bool) -> None:
    """Re-run one section (same settings as a full run) and replace it in ``imaging.json``."""
    path = RESULTS / "imaging.json"
    report = json.loads(path.read_text())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if name == "probe":
            report["probe"], report["throughput_cpu"] = bench_probe(60 if quick else 120, 60 if quick else 120, 8, tmp)
        elif name == "saliency":
            report["saliency"] = bench_saliency(30 if quick else 60, 8, tmp)
        elif name == "mil":
            report["mil"] = bench_mil(60 if quick else 90, 10 if quick else 30, tmp)
        else:
            report["real"] = bench_real(20 if quick else 40, tmp)
    report.setdefault("sections_rerun", []).append(name)
    path.write_text(json.dumps(report, indent=2))
    print(name, json.dumps(report[name]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller cohorts and fewer steps (a few minutes on 2 cores)")
    parser.add_argument("--only", choices=["probe", "saliency", "mil", "real"],
                        help="re-run one section and update it in the existing imaging.json")
    args = parser.parse_args()
    if args.only:
        rerun_section(args.only, args.quick)
        return
    q = args.quick
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = {
        "benchmark": "imaging", "quick": q,
        "machine": machine_info(torch_threads=torch.get_num_threads()),
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        report["probe"], report["throughput_cpu"] = bench_probe(60 if q else 120, 60 if q else 120, 8, tmp)
        print("probe", json.dumps(report["probe"]))
        report["saliency"] = bench_saliency(30 if q else 60, 8, tmp)
        print("saliency", json.dumps(report["saliency"]))
        report["mil"] = bench_mil(60 if q else 90, 10 if q else 30, tmp)
        print("mil", json.dumps(report["mil"]))
        report["real"] = bench_real(20 if q else 40, tmp)
        print("real", json.dumps(report["real"]))
    report["gpu"] = "no GPU on this machine: the 96^3-128^3 mixed-precision figures were not measured"
    report["seconds_total"] = time.perf_counter() - started
    (RESULTS / "imaging.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'imaging.json'} in {report['seconds_total']:.0f} s")


if __name__ == "__main__":
    main()
