"""The reference figures the workbook promises (READMEs, notebooks, exercise answers), in one place.

Test files import them (``from tests.figures import ...``: under ``--import-mode=importlib``
pytest registers ``tests`` as a namespace package rooted at this folder, the way it names
``tests/conftest.py`` ``tests.conftest``) instead of repeating the numbers.

Every figure is one of two kinds, and says which:

* **exact**: counts, pure-pandas aggregates (means, medians) and the seeded tree model. They come
  out the same on every machine, so a float is checked to the precision it is printed with
  (:func:`exact`).
* **toleranced**: solves that stop before they converge. ``LinearRegression()`` on the sparse
  one-hot matrix runs scipy's lsqr, which stops early because the absurd distances make the
  matrix ill-conditioned; ``Ridge()`` runs sparse_cg to ``tol=1e-4``. Where they stop depends on
  the BLAS kernel and the thread count, so their figures hold only to a tolerance (below), several
  times the spread measured on one machine with ``OPENBLAS_NUM_THREADS=1``, ``=2`` and
  ``OPENBLAS_CORETYPE=Prescott`` and ``=Haswell``. ``make test`` runs the suite with two
  OpenBLAS threads, then the tests marked ``figures`` again with one: those fit the models
  directly, in seconds (the notebook runs that check the same figures run in the first pass only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Figure:
    """A reference value and how closely a run must reproduce it (absolute, in its unit)."""

    value: float
    tolerance: float

    def approx(self) -> Any:
        """``pytest.approx`` of the value within the tolerance: ``assert x == f.approx()``."""
        return pytest.approx(self.value, abs=self.tolerance)

    def __str__(self) -> str:
        return f"{self.value} ± {self.tolerance:g}"


def exact(printed: str) -> Figure:
    """A figure that reproduces on every machine, checked to the decimals it is printed with."""
    decimals = len(printed.partition(".")[2])
    return Figure(float(printed), 0.5 * 10.0**-decimals)


#: lsqr at its default tolerance (``LinearRegression()``), stopped early. The spread measured for
#: the PU_DO validation RMSE on synthetic 2021-01 -> 2021-02 is 0.0012 (8.2700 with one thread,
#: 8.2701 with two, 8.2705 Haswell, 8.2712 Prescott); the real 2023-01 -> 2023-02 yellow months
#: spread 0.004 (6.0345-6.0385). Far below the gaps between the models (0.1 and more).
LSQR_TOLERANCE = 0.01
#: lsqr with ``tol=1e-8``: nearly converged; measured spread 1e-4 (8.31551-8.31560, real
#: 7.47953-7.47963), so the fourth decimal can still differ.
LSQR_TIGHT_TOLERANCE = 0.001
#: sparse_cg at ``tol=1e-4`` (``Ridge()``): 7e-5 on synthetic data, but 0.022 on the real months
#: (7.7037 against 7.6813 with the Prescott kernel).
SPARSE_CG_TOLERANCE = 0.05


def lsqr(value: float) -> Figure:
    """A ``LinearRegression()`` figure: toleranced (lsqr stops early, see LSQR_TOLERANCE)."""
    return Figure(value, LSQR_TOLERANCE)


# --- the real green TLC files, train 2021-01 -> validate 2021-02 -------------------------------
# (../shared/data/tlc/README.md lists the reference recipe's figures)

#: Exact: rows in the published files.
REAL_RAW_ROWS = {"2021-01": 76_518, "2021-02": 64_572}
#: Exact: rows kept by the 1-60 minute filter.
REAL_KEPT_ROWS = {"2021-01": 73_908, "2021-02": 61_921}
#: Exact: one-hot columns of the PU_DO matrix (13,220 pairs + trip_distance).
REAL_PU_DO_COLUMNS = 13_221
#: Exact: distinct zone pairs of the kept January trips.
REAL_ZONE_PAIRS = 13_220
#: Exact: the longest distance a January trip claims (miles), which makes the matrix
#: ill-conditioned.
REAL_MAX_DISTANCE = 244_152

#: Toleranced (lsqr): the PU_DO ``LinearRegression()`` of the classic recipe, levels 1, 2 and 3.
REAL_LINEAR_TRAIN_RMSE = lsqr(5.6996)
REAL_LINEAR_VAL_RMSE = lsqr(7.7587)
#: Toleranced (lsqr): PU and DO as two separate categoricals (PU+DO), ``LinearRegression()``.
REAL_SEPARATE_LINEAR_VAL_RMSE = lsqr(10.499)
#: Toleranced (lsqr, tol=1e-8): the figures the course notebook printed.
REAL_TIGHT_LINEAR_TRAIN_RMSE = Figure(4.6408, LSQR_TIGHT_TOLERANCE)
REAL_TIGHT_LINEAR_VAL_RMSE = Figure(7.4796, LSQR_TIGHT_TOLERANCE)
#: Toleranced (lsqr): ``LinearRegression()`` with trip_distance clipped at 100 miles ("about
#: 7.22"; measured 7.22476).
REAL_CLIPPED_LINEAR_VAL_RMSE = lsqr(7.22)
#: Exact (seeded tree, the same with one or two threads): ``hist_gb`` with the catalogue's
#: defaults, level 3's best candidate, printed to two decimals (measured 6.18716).
REAL_HIST_GB_VAL_RMSE = exact("6.19")
#: Exact (pure pandas): the level-1 baselines' RMSE, keyed by the model column of rmse.csv.
REAL_BASELINE_TRAIN_RMSE = {"mean": exact("11.5631"), "median": exact("4.7984"),
                            "speed": exact("10.7074")}
REAL_BASELINE_VAL_RMSE = {"mean": exact("12.2131"), "median": exact("8.4227"),
                          "speed": exact("10.1549")}

# --- synthetic data, seed 0, whole months 2021-01 -> 2021-02: the level-1 exercise answers ------

#: Exact: exercise 2, the filter on the training month (printed by 01-explore.ipynb).
SYNTHETIC_KEPT = "kept 74,475 of 77,471 trips (96.1%)"
#: Exact: exercise 2, the busiest zone pair, its trips and median duration (minutes).
SYNTHETIC_BUSIEST_PAIR = ("74", "75", "1044", "7.82")
#: Exact: exercise 5, one-hot columns of the PU_DO matrix.
SYNTHETIC_PU_DO_COLUMNS = 13_867
#: Exact: exercise 4, the longest distance a January trip claims (miles).
SYNTHETIC_MAX_DISTANCE = 155_467

#: Toleranced (lsqr): exercise 1, the PU_DO ``LinearRegression()`` (8.2700 with one thread,
#: 8.2701 with two, here).
SYNTHETIC_LINEAR_TRAIN_RMSE = lsqr(6.101)
SYNTHETIC_LINEAR_VAL_RMSE = lsqr(8.270)
#: Toleranced (sparse_cg): exercise 1, the best row of the table, PU_DO with Ridge.
SYNTHETIC_BEST = ("PU_DO", "ridge")
SYNTHETIC_BEST_VAL_RMSE = Figure(8.1675, SPARSE_CG_TOLERANCE)
#: Toleranced (lsqr, coordinate descent, sparse_cg): exercise 1, all three PU+DO models.
SYNTHETIC_SEPARATE_VAL_RMSE = lsqr(10.89)
#: Toleranced (lsqr, tol=1e-8): exercise 3.
SYNTHETIC_TIGHT_LINEAR_TRAIN_RMSE = Figure(5.8479, LSQR_TIGHT_TOLERANCE)
SYNTHETIC_TIGHT_LINEAR_VAL_RMSE = Figure(8.3155, LSQR_TIGHT_TOLERANCE)
#: Toleranced (lsqr): exercise 4, trip_distance clipped at 100 miles: RMSE, the distance
#: coefficient (minutes per mile) and the intercept (minutes), before and after the clip.
SYNTHETIC_CLIPPED_LINEAR_TRAIN_RMSE = lsqr(5.512)
SYNTHETIC_CLIPPED_LINEAR_VAL_RMSE = lsqr(7.689)
SYNTHETIC_CLIPPED_DISTANCE_COEF = lsqr(0.885)
SYNTHETIC_INTERCEPT = Figure(27.99, 0.05)  # measured 27.975-27.995
SYNTHETIC_CLIPPED_INTERCEPT = Figure(19.17, 0.05)  # measured 19.165-19.170
#: Exact (pure pandas): exercise 7, the baselines' validation RMSE.
SYNTHETIC_BASELINE_VAL_RMSE = {"mean": exact("12.4524"), "median": exact("9.3284"),
                               "speed": exact("10.8833")}
