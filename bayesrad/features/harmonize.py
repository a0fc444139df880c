"""ComBat harmonisation of feature blocks across centres or scanners (neuroHarmonize).

ComBat (Johnson et al. 2007; Fortin et al. 2018 for imaging features) models each feature as
``y = X b + gamma_batch + delta_batch * e``: covariates ``X`` whose effect must be kept
(age, sex, a biological class), an additive and a multiplicative batch effect shrunk by
empirical Bayes. The implementation is neuroHarmonize's ``harmonizationLearn`` /
``harmonizationApply``: the model learnt on training patients is applied to new patients
from the same batches without refitting, as a held-out evaluation requires.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from bayesrad.errors import FeatureError, NotFittedError, plain

# neuroHarmonize's own name for the batch column.
_SITE = "SITE"


class ComBatHarmonizer(BaseEstimator):
    """Remove centre (batch) effects from numeric features while protecting covariates.

    Parameters
    ----------
    batch_col : column of the input DataFrame holding the batch (centre, scanner) label.
    covariates : columns whose effect is protected (kept in the harmonised features).
        Numeric columns enter linearly; non-numeric (categorical) columns are one-hot encoded
        with the levels seen in ``fit``.
    features : columns to harmonise; ``None`` = every numeric column that is neither the
        batch nor a covariate.
    empirical_bayes : shrink batch effects across features (ComBat's EB step); set False for
        a single feature or for features known to share nothing.
    smooth_terms : numeric covariates modelled with a smooth (spline GAM) effect instead of a
        linear one (e.g. age over a wide range).
    ref_batch : batch left unchanged, the others mapped onto it; ``None`` = the pooled mean.
    seed : seed for neuroHarmonize's randomised steps (smooth-term penalty selection).

    Attributes (after ``fit``)
    --------------------------
    model_ : neuroHarmonize's model dictionary.
    feature_names_ : harmonised columns, in order.
    batches_ : batch labels seen in ``fit``.
    covariate_levels_ : ``{column: levels}`` for categorical covariates.
    """

    def __init__(
        self,
        batch_col: str = "centre",
        covariates: Sequence[str] = (),
        features: Sequence[str] | None = None,
        empirical_bayes: bool = True,
        smooth_terms: Sequence[str] = (),
        ref_batch=None,
        seed: int | None = 0,
    ):
        self.batch_col = batch_col
        self.covariates = covariates
        self.features = features
        self.empirical_bayes = empirical_bayes
        self.smooth_terms = smooth_terms
        self.ref_batch = ref_batch
        self.seed = seed

    def fit(self, df: pd.DataFrame, y=None) -> "ComBatHarmonizer":
        """Learn the ComBat model on the rows of ``df`` (patients x columns). Returns self."""
        self._fit(df)
        return self

    def fit_transform(self, df: pd.DataFrame, y=None) -> pd.DataFrame:
        """Fit on ``df`` and return its harmonised features (same index, harmonised columns)."""
        self._fit(df)
        return self._frame(self._training_output_, df.index)

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        """Harmonise ``df`` with the fitted model (no refitting).

        Every batch in ``df`` must have been seen in ``fit``; returns a DataFrame with the
        index of ``df`` and the harmonised columns, in ``feature_names_`` order.
        """
        if not hasattr(self, "model_"):
            raise NotFittedError("ComBatHarmonizer.transform was called before fit; call fit(training_df) first")
        data, covars = self._design(df, fitting=False)
        unseen = sorted(set(covars[_SITE]) - set(self.batches_), key=str)
        if unseen:
            raise FeatureError(
                f"batch(es) {unseen} in column {self.batch_col!r} were not seen in fit (seen: {list(self.batches_)}); "
                "ComBat cannot harmonise a centre without its own training patients: refit including it"
            )
        from neuroHarmonize import harmonizationApply

        with contextlib.redirect_stdout(io.StringIO()):
            harmonised = harmonizationApply(data, covars, self.model_)
        return self._frame(harmonised, df.index)

    def _fit(self, df: pd.DataFrame) -> np.ndarray:
        from neuroHarmonize import harmonizationLearn

        self._check_columns(df)
        self.batches_ = sorted(pd.unique(df[self.batch_col].astype(str)))
        if len(self.batches_) < 2:
            raise FeatureError(
                f"column {self.batch_col!r} has a single batch {self.batches_}; ComBat needs at least two centres"
            )
        sizes = df[self.batch_col].astype(str).value_counts()
        if sizes.min() < 2:
            raise FeatureError(
                f"batch {sizes.idxmin()!r} of column {self.batch_col!r} has a single patient; "
                "ComBat needs at least two per batch to estimate its variance: merge or drop it"
            )
        self.feature_names_ = self._feature_columns(df)
        self.covariate_levels_ = {
            column: sorted(pd.unique(df[column].astype(str)))
            for column in self.covariates
            if not pd.api.types.is_numeric_dtype(df[column])
        }
        data, covars = self._design(df, fitting=True)
        constant = [name for name, sd in zip(self.feature_names_, data.std(axis=0)) if not sd > 0]
        if constant:
            raise FeatureError(
                f"feature column(s) {constant[:5]} are constant; ComBat divides by their variance: drop them before harmonising"
            )
        # neuroHarmonize prints progress to stdout and uses np.matrix internally; neither is
        # the caller's concern. It also reseeds NumPy's global generator with `seed` (its API
        # takes no Generator), so the caller's global state is saved and put back.
        global_state = np.random.get_state()
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore", PendingDeprecationWarning)
                self.model_, harmonised = harmonizationLearn(
                    data,
                    covars,
                    eb=self.empirical_bayes and data.shape[1] > 1,
                    smooth_terms=list(self.smooth_terms),
                    ref_batch=None if self.ref_batch is None else str(self.ref_batch),
                    seed=self.seed,
                )
        finally:
            np.random.set_state(global_state)
        self._training_output_ = harmonised
        return data

    def _check_columns(self, df: pd.DataFrame) -> None:
        if not isinstance(df, pd.DataFrame):
            raise FeatureError("ComBatHarmonizer expects a pandas DataFrame with the batch, covariate and feature columns")
        needed = [self.batch_col, *self.covariates]
        absent = [column for column in needed if column not in df.columns]
        if absent:
            raise FeatureError(f"column(s) {absent} not in the table (columns: {list(df.columns)[:10]}...); fix batch_col/covariates")
        if df[self.batch_col].isna().any():
            patient = df.index[df[self.batch_col].isna()][0]
            raise FeatureError(f"patient {plain(patient)!r} has no batch in column {self.batch_col!r}; fill it or drop the patient")
        unknown_smooth = [term for term in self.smooth_terms if term not in self.covariates]
        if unknown_smooth:
            raise FeatureError(f"smooth_terms {unknown_smooth} must also be listed in covariates")

    def _feature_columns(self, df: pd.DataFrame) -> list[str]:
        if self.features is not None:
            absent = [column for column in self.features if column not in df.columns]
            if absent:
                raise FeatureError(f"feature column(s) {absent} not in the table; fix features=")
            return list(self.features)
        excluded = {self.batch_col, *self.covariates}
        columns = [c for c in df.columns if c not in excluded and pd.api.types.is_numeric_dtype(df[c])]
        if not columns:
            raise FeatureError("no numeric feature column to harmonise; pass features=[...]")
        return columns

    def _design(self, df: pd.DataFrame, fitting: bool) -> tuple[np.ndarray, pd.DataFrame]:
        """The (patients x features) array and neuroHarmonize's covariate table (SITE + numeric)."""
        self._check_columns(df)
        absent = [column for column in self.feature_names_ if column not in df.columns]
        if absent:
            raise FeatureError(f"feature column(s) {absent} seen in fit are missing; give the same columns as in fit")
        values = df[self.feature_names_]
        non_numeric = [c for c in values.columns if not pd.api.types.is_numeric_dtype(values[c])]
        if non_numeric:
            raise FeatureError(f"feature column(s) {non_numeric} are not numeric; convert or exclude them")
        data = values.to_numpy(dtype=float)
        if not np.all(np.isfinite(data)):
            row, col = np.argwhere(~np.isfinite(data))[0]
            raise FeatureError(
                f"patient {df.index[row]!r}, column {self.feature_names_[col]!r} is NaN or infinite; "
                "ComBat needs complete features: impute or drop the patient first"
            )
        covars = pd.DataFrame({_SITE: df[self.batch_col].astype(str).to_numpy()}, index=df.index)
        for column in self.covariates:
            if column in self.covariate_levels_:
                levels = self.covariate_levels_[column]
                observed = df[column].astype(str)
                unseen = sorted(set(observed) - set(levels))
                if unseen:
                    raise FeatureError(
                        f"covariate {column!r} has level(s) {unseen} not seen in fit (levels: {levels}); refit including them"
                    )
                # Drop the first level: the batch indicators already span the intercept.
                for level in levels[1:]:
                    covars[f"{column}={level}"] = (observed == level).astype(float).to_numpy()
            else:
                numeric = pd.to_numeric(df[column], errors="coerce")
                if numeric.isna().any():
                    patient = df.index[numeric.isna()][0]
                    raise FeatureError(f"patient {plain(patient)!r}: covariate {column!r} is missing or not numeric; fill it")
                covars[column] = numeric.to_numpy(dtype=float)
        return data, covars.reset_index(drop=True)

    def _frame(self, harmonised: np.ndarray, index: pd.Index) -> pd.DataFrame:
        return pd.DataFrame(np.asarray(harmonised, dtype=float), index=index, columns=self.feature_names_)


def harmonize(
    train: pd.DataFrame,
    test: pd.DataFrame | None = None,
    *,
    batch_col: str = "centre",
    covariates: Sequence[str] = (),
    features: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None, ComBatHarmonizer]:
    """Fit ComBat on ``train`` and apply it to ``train`` and (without refitting) ``test``.

    Returns ``(train_harmonised, test_harmonised_or_None, fitted_harmonizer)``.
    """
    harmonizer = ComBatHarmonizer(batch_col=batch_col, covariates=covariates, features=features)
    train_out = harmonizer.fit_transform(train)
    test_out = harmonizer.transform(test) if test is not None else None
    return train_out, test_out, harmonizer


__all__ = ["ComBatHarmonizer", "harmonize"]
