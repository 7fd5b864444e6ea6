"""Statistics of the paper (*Statistical analysis*): cohort tables with the paper's test rule, ROC statistics,
calibration and decision curves.

Science layer (imports core only).

* :mod:`her2lib.stats.tables` — ``categorical_test``, ``continuous_test`` (Student's t or Mann-Whitney with R's
  ``wilcox.test`` default: exact P without ties when both groups have < 50 values), ``cohort_table`` (Tables 1-3).
* :mod:`her2lib.stats.roc` — ``auc``, ``delong_test`` (paired), ``delong_test_unpaired``, ``auc_ci``,
  ``binary_metrics`` (F1 interval from mid-P confidence distributions), ``youden_threshold`` (pROC's
  ``coords(..., "best")``, ``±inf`` included).
* :mod:`her2lib.stats.calibration` — ``calibration``: calibration intercept (calibration-in-the-large) and slope
  (Van Calster et al. 2016; Steyerberg 2019) with Wald CIs, Brier score; ``brier_score``, ``calibration_curve``
  (reliability curve with Clopper-Pearson intervals).
* :mod:`her2lib.stats.decision` — ``decision_curve`` (net benefit, Vickers & Elkin 2006).
* :mod:`her2lib.stats.reclassification` — ``reclassification``: category-free NRI and IDI of a new model over an old
  one with SEs, Wald CIs and P values (Pencina et al. 2008, 2011), as R's ``Hmisc::improveProb``.
* :mod:`her2lib.stats.repeats` — ``repeat_distribution``: a statistic's spread over the repetitions of a repeated
  cross-validation (mean, SD, empirical percentiles).
* :mod:`her2lib.stats.multiclass` — ``multiclass_auc`` (one-vs-rest AUCs with DeLong CIs, macro average with a
  stratified bootstrap CI; equal to scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``),
  ``confusion_matrix``, ``multiclass_metrics`` (per-class sensitivity/specificity/PPV/NPV, Clopper-Pearson).

Labels, scores and probabilities are checked by one validator (``stats._common``): bad input is a
:class:`~her2lib.errors.DataError` with the same message wherever it is passed (stats, evaluate, fusion).

Checked against R 4.2 / pROC 1.18 (``tests/fixtures/make_reference.R``), statsmodels, brute force, and every
categorical P value of the paper's Tables 1-3 (see ``tests/test_stats_*.py``).
"""

from .calibration import CalibrationResult, brier_score, calibration, calibration_curve
from .decision import decision_curve
from .multiclass import (
    ClassMetrics,
    MulticlassAUC,
    MulticlassMetrics,
    confusion_matrix,
    multiclass_auc,
    multiclass_metrics,
)
from .reclassification import ReclassificationResult, reclassification
from .repeats import RepeatDistribution, repeat_distribution
from .roc import (
    AUCInterval,
    BinaryMetrics,
    DeLongResult,
    Estimate,
    UnpairedDeLongResult,
    auc,
    auc_ci,
    binary_metrics,
    delong_placements,
    delong_test,
    delong_test_unpaired,
    youden_threshold,
)
from .tables import (
    PAPER_PVALUES,
    CohortTables,
    TestResult,
    Variable,
    categorical_test,
    cohort_table,
    cohort_tables,
    compare_with_paper,
    continuous_test,
    fisher_exact_rx2,
    format_pvalue,
    paper_variables,
    table_tests,
)

__all__ = [
    "auc",
    "delong_test",
    "DeLongResult",
    "delong_test_unpaired",
    "UnpairedDeLongResult",
    "delong_placements",
    "auc_ci",
    "AUCInterval",
    "binary_metrics",
    "BinaryMetrics",
    "Estimate",
    "youden_threshold",
    "calibration",
    "CalibrationResult",
    "brier_score",
    "calibration_curve",
    "decision_curve",
    "reclassification",
    "ReclassificationResult",
    "RepeatDistribution",
    "repeat_distribution",
    "multiclass_auc",
    "MulticlassAUC",
    "confusion_matrix",
    "multiclass_metrics",
    "MulticlassMetrics",
    "ClassMetrics",
    "categorical_test",
    "continuous_test",
    "TestResult",
    "fisher_exact_rx2",
    "cohort_table",
    "cohort_tables",
    "CohortTables",
    "table_tests",
    "compare_with_paper",
    "paper_variables",
    "Variable",
    "PAPER_PVALUES",
    "format_pvalue",
]
