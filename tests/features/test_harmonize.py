"""ComBat harmonisation: the centre effect goes, the protected biological effect stays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from bayesrad.errors import FeatureError, NotFittedError
from bayesrad.features.harmonize import ComBatHarmonizer, harmonize

TRUE_EFFECT = 1.5  # feature shift per unit of the protected covariate


def _centre_data(n_per_centre: int, seed: int) -> pd.DataFrame:
    """Three centres with additive and multiplicative effects; the protected binary covariate
    is more frequent in some centres, so it is confounded with the centre."""
    rng = np.random.default_rng(seed)
    centre_shift = {"A": 0.0, "B": 3.0, "C": -2.0}
    centre_scale = {"A": 1.0, "B": 2.0, "C": 0.6}
    centre_prevalence = {"A": 0.2, "B": 0.5, "C": 0.8}
    rows = []
    for centre in centre_shift:
        aggressive = rng.random(n_per_centre) < centre_prevalence[centre]
        for i in range(n_per_centre):
            noise = rng.normal(size=6)
            values = 10 + np.arange(6) + TRUE_EFFECT * aggressive[i] + centre_shift[centre] * (1 + 0.2 * np.arange(6))
            values = values + centre_scale[centre] * noise
            rows.append({"centre": centre, "aggressive": int(aggressive[i]), **{f"pet_f{j}": v for j, v in enumerate(values)}})
    frame = pd.DataFrame(rows)
    frame.index = pd.Index([f"s{seed}_p{i}" for i in range(len(frame))], name="patient_id")
    return frame


def _centre_anova(values: pd.Series, covariates: pd.DataFrame) -> tuple[float, float]:
    """Centre term of OLS feature ~ aggressive + centre (type-II ANOVA): (p-value, partial eta^2)."""
    frame = covariates.assign(y=values.to_numpy())
    table = anova_lm(smf.ols("y ~ C(aggressive) + C(centre)", data=frame).fit(), typ=2)
    centre_ss, residual_ss = table.loc["C(centre)", "sum_sq"], table.loc["Residual", "sum_sq"]
    return float(table.loc["C(centre)", "PR(>F)"]), float(centre_ss / (centre_ss + residual_ss))


def _centre_p_value(values: pd.Series, covariates: pd.DataFrame) -> float:
    return _centre_anova(values, covariates)[0]


def _protected_effect(values: pd.Series, covariates: pd.DataFrame) -> float:
    frame = covariates.assign(y=values.to_numpy())
    return float(smf.ols("y ~ aggressive", data=frame).fit().params["aggressive"])


def test_combat_removes_the_centre_term_and_keeps_the_protected_effect_on_new_patients():
    train, test = _centre_data(60, seed=0), _centre_data(40, seed=1)
    features = [c for c in train.columns if c.startswith("pet_")]
    harmonizer = ComBatHarmonizer(batch_col="centre", covariates=["aggressive"])
    assert harmonizer.fit(train) is harmonizer
    assert harmonizer.feature_names_ == features
    train_h, test_h = harmonizer.transform(train), harmonizer.transform(test)
    assert train_h.index.equals(train.index) and test_h.index.equals(test.index)

    for column in features:
        assert _centre_p_value(train[column], train) < 1e-6
        assert _centre_p_value(train_h[column], train) > 0.05
        # Held-out patients, harmonised by the model fitted on the training patients: the
        # training estimate's own error leaves a small centre term, so the bound is on its
        # size (share of variance) and a Bonferroni-level p-value, not p > 0.05.
        p_before, eta_before = _centre_anova(test[column], test)
        p_after, eta_after = _centre_anova(test_h[column], test)
        assert eta_before > 0.5 and eta_after < 0.15
        assert p_after > 0.001
        # the unadjusted effect is confounded by the centres before and close to the truth after
        assert _protected_effect(train_h[column], train) == pytest.approx(TRUE_EFFECT, abs=0.3)
        assert _protected_effect(test_h[column], test) == pytest.approx(TRUE_EFFECT, abs=0.4)
    # fit_transform on the training rows equals fit + transform
    np.testing.assert_allclose(ComBatHarmonizer(covariates=["aggressive"]).fit_transform(train), train_h, atol=1e-8)


def test_without_protection_combat_removes_part_of_a_confounded_biological_effect():
    train = _centre_data(60, seed=0)
    protected = ComBatHarmonizer(covariates=["aggressive"]).fit_transform(train)
    unprotected = ComBatHarmonizer(covariates=[]).fit_transform(train)
    # Unprotected, the centres' mean differences, partly made of biology (prevalence 0.2 to
    # 0.8), are removed with the centre effect, so the pooled effect shrinks to the
    # within-centre share of the covariate's variance: 0.19 / 0.25, i.e. about 1.14.
    effect_protected = np.mean([_protected_effect(protected[c], train) for c in protected.columns])
    effect_unprotected = np.mean([_protected_effect(unprotected[c], train) for c in unprotected.columns])
    assert effect_protected == pytest.approx(TRUE_EFFECT, abs=0.15)
    assert effect_unprotected < effect_protected - 0.2


def test_categorical_covariates_and_helper():
    train, test = _centre_data(30, seed=2), _centre_data(20, seed=3)
    train["stage"] = np.where(train["aggressive"] == 1, "III", "I")
    test["stage"] = np.where(test["aggressive"] == 1, "III", "I")
    train_h, test_h, fitted = harmonize(train, test, covariates=["stage"], features=["pet_f0", "pet_f1"])
    assert fitted.covariate_levels_ == {"stage": ["I", "III"]}
    assert list(test_h.columns) == ["pet_f0", "pet_f1"]
    assert _centre_p_value(train_h["pet_f0"], train) > 0.05
    assert _centre_anova(test_h["pet_f0"], test)[1] < 0.15


def test_reference_batch_is_left_unchanged_and_others_are_mapped_onto_it():
    train = _centre_data(40, seed=5)
    harmonised = ComBatHarmonizer(covariates=["aggressive"], ref_batch="A").fit_transform(train)
    reference = train["centre"] == "A"
    np.testing.assert_allclose(harmonised[reference], train.loc[reference, harmonised.columns], atol=1e-10)
    for column in harmonised.columns:
        assert _centre_p_value(harmonised[column], train) > 0.05


def test_bad_inputs_raise_named_errors():
    train = _centre_data(10, seed=4)
    with pytest.raises(NotFittedError):
        ComBatHarmonizer().transform(train)
    with pytest.raises(FeatureError, match="'site'"):
        ComBatHarmonizer(batch_col="site").fit(train)
    fitted = ComBatHarmonizer(covariates=["aggressive"]).fit(train)
    new_centre = train.assign(centre="D")
    with pytest.raises(FeatureError, match=r"\['D'\].*refit"):
        fitted.transform(new_centre)
    holed = train.copy()
    holed.iloc[3, holed.columns.get_loc("pet_f2")] = np.nan
    with pytest.raises(FeatureError, match=f"{holed.index[3]}.*pet_f2"):
        fitted.transform(holed)
    with pytest.raises(FeatureError, match="single patient"):
        ComBatHarmonizer().fit(train.iloc[:11])


def test_wholebody_scenario_scanner_effect_removed_and_glucose_effect_kept():
    from bayesrad.data.simulate import simulate

    simulation = simulate("wholebody_petct", n_patients=400, seed=0)
    clinical, organs = simulation.cohort.blocks["clinical"], simulation.cohort.blocks["organ_suv"]
    table = clinical[["centre", "blood_glucose_mmol_l", "bmi_kg_m2", "age_years"]].join(organs)
    table["centre"] = table["centre"].astype(str)
    train, test = table.iloc[:250], table.iloc[250:]
    protected = simulation.truth.parameters["protected"]  # ["blood_glucose_mmol_l"]
    scanner_log_factor = simulation.truth.parameters["scanner_log_factor"]
    features = list(organs.columns)
    harmonizer = ComBatHarmonizer(batch_col="centre", covariates=protected, features=features).fit(train)
    unprotected = ComBatHarmonizer(batch_col="centre", covariates=[], features=features).fit(train)

    def glucose_effect(values, part):
        frame = part.assign(y=values.to_numpy())
        return smf.ols("y ~ blood_glucose_mmol_l + bmi_kg_m2 + age_years", data=frame).fit().params["blood_glucose_mmol_l"]

    def centre_p(values, part):
        frame = part.assign(y=values.to_numpy())
        return anova_lm(smf.ols("y ~ blood_glucose_mmol_l + C(centre)", data=frame).fit(), typ=2).loc["C(centre)", "PR(>F)"]

    for part, p_bound in ((train, 0.05), (test, 0.01)):  # held out: see the synthetic test above
        harmonised, naive = harmonizer.transform(part), unprotected.transform(part)
        # On the log scale the scanner multiplies SUV: measured = scanner-free + log factor.
        scanner_free = part[features].sub(part["centre"].map(scanner_log_factor).astype(float), axis=0)
        for column in features:
            if part is train:
                assert centre_p(part[column], part) < 0.05
            assert centre_p(harmonised[column], part) > p_bound
            # harmonised values track the scanner-free values up to a constant
            residual_sd = (harmonised[column] - scanner_free[column]).std()
            assert residual_sd < 0.3 * (part[column] - scanner_free[column]).std()
            true_effect = glucose_effect(scanner_free[column], part)
            assert abs(glucose_effect(harmonised[column], part) - true_effect) < 0.01
        # glucose differs between centres: without protection ComBat removes part of its effect
        brain_truth = glucose_effect(scanner_free["brain_log_suvmean"], part)
        assert abs(glucose_effect(naive["brain_log_suvmean"], part) - brain_truth) > 0.02
