"""Figures: every plot her2lib draws, one module per notebook's figures (science layer).

* :mod:`.cohort` — the cohort gallery (notebook 00);
* :mod:`.preprocess` — ROI examples before/after cropping (02);
* :mod:`.training` — learning curves (03, 04);
* :mod:`.evaluation` — Figure 3A (ROC), 3B (performance), calibration and decision curves (06);
* :mod:`.gradcam` — Figure 4, Grad-CAM of DL-US and DL-MRI (07);
* :mod:`.multiclass` — the three-class HER2 question (zero / low / positive): the confusion matrix;
* :mod:`._style` — the shared style and the colour of each model (Okabe-Ito, colour-blind safe).

Each function takes results (tables, arrays, result objects), draws on a new matplotlib ``Figure`` (no pyplot
state, never ``matplotlib.use``: the user's kernel keeps its backend), saves it atomically through
:func:`her2lib.io.save_figure` when given a path, and returns the figure.
"""

from . import cohort, evaluation, gradcam, multiclass, preprocess, training

__all__ = ["cohort", "preprocess", "training", "evaluation", "gradcam", "multiclass"]
