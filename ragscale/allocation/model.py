"""The computation allocation model of Yue et al. 2025 (section 5): an sklearn-like estimator.

    sigma^-1(P(theta)) = (a + b * i)^T log(theta + eps) + c,    theta = (k, m, n),  i = (i_doc, i_shot, 0)

b_n is fixed at 0, so there are six free parameters (a_k, a_m, a_n, b_doc, b_shot, c).

- ``sigmoid="paper"``: P is the score z-scored per dataset and metric, and sigma is the paper's
  fitted sigmoid sigma(x) = 3.30 / (1 + exp(-1.81 (x + 0.46))) - 2.18 (range -2.18 .. 1.12).
- ``sigmoid="logistic"``: the plain logistic on the score as a fraction (percent scores are divided
  by 100); no z-scoring.
- ``standardize=False`` (paper sigmoid): the scores are taken as already z-scored.

``fit`` solves the problem by linear least squares in sigma^-1 space (targets clipped inside the
sigmoid's range), then refines with scipy's nonlinear least squares on the error in P space, which
is what R^2 and MSE are reported on (as in the paper). When every row has the same i (one dataset),
b cannot be told apart from a: b is then fixed at 0 and a absorbs b*i, which predicts the same.
A knob the rows never vary (say n, when only DRAG was run) cannot be learned: its a is fixed at 0,
so the model predicts no gain from it. ``fixed_`` lists the parameters fixed this way.

``context_window_`` is the window of the model the rows were measured on (``fit(context_window=)``
or the smallest value of a ``context_window`` column); it travels into the profile so that the
optimiser never proposes a call the measured model could not take. None: unknown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from ragscale.allocation.context_length import canonical_theta, check_strategy
from ragscale.allocation.profiles import Profile
from ragscale.errors import UserError

PAPER_SIGMOID = (3.30, 1.81, 0.46, 2.18)  # scale, slope, shift, offset
_EDGE = 1e-3  # keep targets this far inside the sigmoid's open range before inverting


def sigmoid(x, kind: str = "paper"):
    x = np.asarray(x, dtype=float)
    if kind == "logistic":
        return 1.0 / (1.0 + np.exp(-x))
    scale, slope, shift, offset = PAPER_SIGMOID
    return scale / (1.0 + np.exp(-slope * (x + shift))) - offset


def sigmoid_range(kind: str = "paper") -> tuple[float, float]:
    if kind == "logistic":
        return 0.0, 1.0
    scale, _, _, offset = PAPER_SIGMOID
    return -offset, scale - offset


def inverse_sigmoid(p, kind: str = "paper"):
    low, high = sigmoid_range(kind)
    p = np.clip(np.asarray(p, dtype=float), low + _EDGE, high - _EDGE)
    if kind == "logistic":
        return np.log(p / (1.0 - p))
    scale, slope, shift, offset = PAPER_SIGMOID
    return -np.log(scale / (p + offset) - 1.0) / slope - shift


def _group_keys(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    dataset = rows["dataset"].astype(str) if "dataset" in rows else pd.Series("all", index=rows.index)
    metric = rows["metric"].astype(str) if "metric" in rows else pd.Series("score", index=rows.index)
    return dataset, metric


def _window(given, rows: pd.DataFrame) -> int | None:
    """The context window the rows were measured under: given, else the smallest recorded one."""
    if given is not None:
        return int(given)
    if "context_window" in rows:
        recorded = pd.to_numeric(rows["context_window"], errors="coerce").dropna()
        if len(recorded):
            return int(recorded.min())  # several engines: only the smallest window is safe for all
    return None


def _theta(rows: pd.DataFrame):
    """Canonical (k, m, n) per row: knobs a strategy lacks are zeroed (n=1 outside IterDRAG)."""
    k, m, n = (np.empty(len(rows)) for _ in range(3))
    for strategy, index in rows.groupby("strategy").indices.items():
        part = rows.iloc[index]
        k[index], m[index], n[index] = canonical_theta(str(strategy), part["k"], part["m"], part["n"])
    return k, m, n


class AllocationModel:
    """Fit/predict the allocation model. Attributes after ``fit``: a_, b_, c_, i_doc_, i_shot_, r2_, mse_."""

    def __init__(self, sigmoid: str = "paper", eps: float = 0.01, standardize: bool = True):
        if sigmoid not in ("paper", "logistic"):
            raise UserError(f"sigmoid must be 'paper' or 'logistic', got {sigmoid!r}")
        if eps <= 0:
            raise UserError("eps must be positive")
        self.sigmoid = sigmoid
        self.eps = float(eps)
        # z-score per dataset and metric as the paper does; False when scores already are z-scores.
        self.standardize = bool(standardize)

    # ---- data preparation -------------------------------------------------------------------
    def _targets(self, rows: pd.DataFrame) -> np.ndarray:
        """Scores in the space the sigmoid lives in, remembering how to map back (per group)."""
        score = rows["score"].to_numpy(float)
        dataset, metric = _group_keys(rows)
        self.scales_ = {}
        target = np.empty(len(rows))
        for (ds, me), index in rows.groupby([dataset, metric]).indices.items():
            values = score[index]
            if self.sigmoid == "logistic":
                unit = 100.0 if np.nanmax(np.abs(values)) > 1.0 else 1.0
                mean, std = 0.0, unit
            elif not self.standardize:
                mean, std = 0.0, 1.0
            else:
                mean, std = float(values.mean()), float(values.std(ddof=0))
                std = std if std > 0 else 1.0  # one distinct score: nothing to scale
            self.scales_[(str(ds), str(me))] = (mean, std)
            target[index] = (values - mean) / std
        means, stds = zip(*self.scales_.values())
        self.mean_, self.std_ = float(np.mean(means)), float(np.mean(stds))
        return target

    def _measure_informativeness(self, rows, target, k, m, n, i_doc, i_shot):
        """i per row: given (scalar or {dataset: value}) or measured from the k=1 / m=1 rows."""
        dataset, _ = _group_keys(rows)
        self.i_by_dataset_, self.i_source_ = {}, {}
        for ds in dataset.unique():
            mask = (dataset == ds).to_numpy()
            base = mask & (k == 0) & (m == 0) & (n == 1)
            one_doc = mask & (k == 1) & (m == 0) & (n == 1)
            one_shot = mask & (k == 0) & (m == 1) & (n == 1)
            measured = []
            for given, probe in ((i_doc, one_doc), (i_shot, one_shot)):
                if isinstance(given, dict) and ds in given:
                    measured.append((float(given[ds]), "given"))
                elif given is not None and not isinstance(given, dict):
                    measured.append((float(given), "given"))
                elif base.any() and probe.any():
                    measured.append((float(target[probe].mean() - target[base].mean()), "measured"))
                else:
                    measured.append((0.0, "missing: 0"))
            self.i_by_dataset_[str(ds)] = (measured[0][0], measured[1][0])
            self.i_source_[str(ds)] = (measured[0][1], measured[1][1])
        i_rows = np.array([self.i_by_dataset_[str(ds)] for ds in dataset])
        self.i_doc_ = float(np.mean([v[0] for v in self.i_by_dataset_.values()]))
        self.i_shot_ = float(np.mean([v[1] for v in self.i_by_dataset_.values()]))
        return i_rows[:, 0], i_rows[:, 1]

    # ---- fit / predict ----------------------------------------------------------------------
    def fit(self, rows: pd.DataFrame, i_doc=None, i_shot=None, context_window: int | None = None) -> "AllocationModel":
        """Least-squares fit on rows with columns strategy, k, m, n, score [, dataset, metric, context_window]."""
        missing = {"strategy", "k", "m", "n", "score"} - set(rows.columns)
        if missing:
            raise UserError(f"fit needs columns {', '.join(sorted(missing))}")
        rows = rows.dropna(subset=["score"]).reset_index(drop=True)
        for strategy in rows["strategy"].unique():
            check_strategy(str(strategy))
        if len(rows) < 3:
            raise UserError(f"fit needs at least 3 scored rows, got {len(rows)}")
        k, m, n = _theta(rows)
        target = self._targets(rows)
        idoc, ishot = self._measure_informativeness(rows, target, k, m, n, i_doc, i_shot)
        logs = np.log(np.column_stack([k, m, n]) + self.eps)
        design = np.column_stack([logs, idoc * logs[:, 0], ishot * logs[:, 1], np.ones(len(rows))])
        # A knob the rows never vary cannot be learned (its column duplicates the intercept), and a b
        # column whose i has no spread duplicates its a column: those parameters are fixed at 0.
        varied = np.ptp(logs, axis=0) > 1e-12
        free = np.array([*varied, varied[0] and np.ptp(idoc) > 1e-12, varied[1] and np.ptp(ishot) > 1e-12, True])
        self.fixed_ = [name for name, keep in zip(("a_k", "a_m", "a_n", "b_doc", "b_shot", "c"), free) if not keep]
        start, *_ = np.linalg.lstsq(design[:, free], inverse_sigmoid(target, self.sigmoid), rcond=None)

        def residual(params):
            return sigmoid(design[:, free] @ params, self.sigmoid) - target

        params = least_squares(residual, start, method="lm" if free.sum() <= len(rows) else "trf").x
        full = np.zeros(6)
        full[free] = params
        self.a_ = full[:3].copy()
        self.b_ = np.array([full[3], full[4], 0.0])
        self.c_ = float(full[5])
        fitted = sigmoid(design @ full, self.sigmoid)
        self.mse_ = float(np.mean((fitted - target) ** 2))
        total = float(np.sum((target - target.mean()) ** 2))
        self.r2_ = 1.0 - float(np.sum((fitted - target) ** 2)) / total if total > 0 else float("nan")
        self.n_rows_ = len(rows)
        self.context_window_ = _window(context_window, rows)
        # What a predicted score is: the metric (when the rows name one) and the factor to percent,
        # so the optimiser reports every model's predictions on one scale (fractions -> x100).
        dataset, metric = _group_keys(rows)
        self.metric_ = str(metric.iloc[0]) if "metric" in rows and metric.nunique() == 1 else ""
        self.dataset_ = str(dataset.iloc[0]) if "dataset" in rows and dataset.nunique() == 1 else ""
        self.score_scale_ = 100.0 if np.nanmax(np.abs(rows["score"].to_numpy(float))) <= 1.0 else 1.0
        return self

    def _check_fitted(self):
        if not hasattr(self, "a_"):
            raise UserError("the allocation model is not fitted yet (call fit or from_profile)")

    def _arrays(self, X, m, n, dataset, metric):
        """(k, m, n, i_doc, i_shot, mean, std) from a DataFrame or from k, m, n arrays."""
        if isinstance(X, pd.DataFrame):
            k, mm, nn = _theta(X) if "strategy" in X else (X["k"].to_numpy(float), X["m"].to_numpy(float),
                                                           X["n"].to_numpy(float))
            ds, me = _group_keys(X)
            i_rows = np.array([self.i_by_dataset_.get(str(d), (self.i_doc_, self.i_shot_)) for d in ds])
            scale = np.array([self.scales_.get((str(d), str(e)), (self.mean_, self.std_)) for d, e in zip(ds, me)])
            return k, mm, nn, i_rows[:, 0], i_rows[:, 1], scale[:, 0], scale[:, 1]
        if m is None or n is None:
            raise UserError("predict takes a DataFrame, or k, m and n")
        idoc, ishot = self.i_by_dataset_.get(dataset, (self.i_doc_, self.i_shot_))
        mean, std = self.scales_.get((dataset, metric), (self.mean_, self.std_))
        return np.asarray(X, float), np.asarray(m, float), np.asarray(n, float), idoc, ishot, mean, std

    def coefficients(self, i_doc=None, i_shot=None) -> np.ndarray:
        """Effective slopes a + b*i for (k, m, n) at the given (default: fitted) informativeness."""
        self._check_fitted()
        i = np.array([self.i_doc_ if i_doc is None else i_doc, self.i_shot_ if i_shot is None else i_shot, 0.0])
        return self.a_ + self.b_ * i

    def linear_predictor(self, k, m, n, i_doc=None, i_shot=None):
        """sigma^-1 of the prediction: increasing in the predicted score, so cheap to maximise.

        i_doc / i_shot may be scalars or per-row arrays (one value per dataset of each row).
        """
        self._check_fitted()
        i_doc = self.i_doc_ if i_doc is None else np.asarray(i_doc, float)
        i_shot = self.i_shot_ if i_shot is None else np.asarray(i_shot, float)
        slope_k = self.a_[0] + self.b_[0] * i_doc
        slope_m = self.a_[1] + self.b_[1] * i_shot
        return (slope_k * np.log(np.asarray(k, float) + self.eps) + slope_m * np.log(np.asarray(m, float) + self.eps)
                + self.a_[2] * np.log(np.asarray(n, float) + self.eps) + self.c_)

    def predict_z(self, X, m=None, n=None, *, dataset=None, metric=None):
        """Prediction in the model's own space (z-score for the paper sigmoid, fraction for logistic)."""
        self._check_fitted()
        k, m, n, idoc, ishot, _, _ = self._arrays(X, m, n, dataset, metric)
        return sigmoid(self.linear_predictor(k, m, n, idoc, ishot), self.sigmoid)

    def predict(self, X, m=None, n=None, *, dataset=None, metric=None):
        """Raw score: ``predict(rows)`` with a DataFrame, or ``predict(k, m, n)`` with arrays."""
        self._check_fitted()
        k, m, n, idoc, ishot, mean, std = self._arrays(X, m, n, dataset, metric)
        return mean + std * sigmoid(self.linear_predictor(k, m, n, idoc, ishot), self.sigmoid)

    def to_raw(self, p):
        """Map the model's own space back to raw scores with the default scale."""
        return self.mean_ + self.std_ * np.asarray(p, float)

    def to_percent(self, p):
        """The model's own space as a percent score: what every page, export and the CLI show."""
        return getattr(self, "score_scale_", 1.0) * self.to_raw(p)

    # ---- profiles ---------------------------------------------------------------------------
    @classmethod
    def from_profile(cls, profile: Profile) -> "AllocationModel":
        model = cls(sigmoid=profile.sigmoid, eps=profile.eps)
        model.a_, model.b_, model.c_ = np.array(profile.a, float), np.array(profile.b, float), float(profile.c)
        model.b_[2] = 0.0
        model.i_doc_, model.i_shot_ = float(profile.i_doc), float(profile.i_shot)
        model.i_by_dataset_ = {str(k): tuple(v) for k, v in (profile.i_by_dataset or {}).items()}
        model.mean_, model.std_ = float(profile.mean), float(profile.std)
        model.scales_ = {(profile.dataset, profile.metric): (model.mean_, model.std_)}
        model.r2_, model.mse_, model.n_rows_ = profile.r2, profile.mse, profile.n_rows
        model.name_, model.dataset_, model.metric_ = profile.name, profile.dataset, profile.metric
        model.context_window_ = profile.context_window
        model.score_scale_ = float(profile.score_scale)
        return model

    def to_profile(self, name: str, source: str = "", notes: str = "") -> Profile:
        self._check_fitted()
        only = next(iter(self.scales_)) if len(self.scales_) == 1 else ("", "")
        if getattr(self, "metric_", ""):  # the rows named their metric (the group key is "score" when not)
            only = (only[0], self.metric_)
        return Profile(
            name=name, a=tuple(float(x) for x in self.a_), b=tuple(float(x) for x in self.b_), c=self.c_,
            sigmoid=self.sigmoid, eps=self.eps, i_doc=self.i_doc_, i_shot=self.i_shot_,
            mean=self.mean_, std=self.std_, dataset=only[0], metric=only[1],
            r2=None if self.r2_ is None else float(self.r2_), mse=None if self.mse_ is None else float(self.mse_),
            n_rows=getattr(self, "n_rows_", None), source=source, notes=notes,
            i_by_dataset={k: list(v) for k, v in self.i_by_dataset_.items()},
            context_window=getattr(self, "context_window_", None), score_scale=getattr(self, "score_scale_", 1.0),
        )

    def to_dict(self) -> dict:
        return self.to_profile(getattr(self, "name_", "fitted")).to_dict()

    def __repr__(self) -> str:
        if not hasattr(self, "a_"):
            return f"AllocationModel(sigmoid={self.sigmoid!r}, eps={self.eps})"
        return (f"AllocationModel(sigmoid={self.sigmoid!r}, a={np.round(self.a_, 3).tolist()}, "
                f"b={np.round(self.b_, 3).tolist()}, c={self.c_:.3f}, r2={self.r2_})")
