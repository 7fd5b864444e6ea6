"""her2lib: a reproducible reproduction of Fan et al. (2025), "Deep learning predicts HER2 status in invasive
breast cancer from multimodal ultrasound and MRI".

Four layers; imports point one way, runner -> stages -> science -> core (``tests/test_architecture.py``):

* **core**: :mod:`~her2lib.errors`, :mod:`~her2lib.options` (choices with "did you mean"), :mod:`~her2lib.io`
  (atomic writes), :mod:`~her2lib.contract` (the vocabulary: modalities, models, manifest and prediction columns,
  the prediction-file reader, the paper's Tables 1-3).
* **science**: pure functions and result objects, one concept per module: cohort data and images
  (:mod:`~her2lib.data`), the synthetic cohort (:mod:`~her2lib.synth`), real-data importers
  (:mod:`~her2lib.adapters`), statistics (:mod:`~her2lib.stats`), ROI preprocessing and augmentation
  (:mod:`~her2lib.roi`, :mod:`~her2lib.transforms`), models (:mod:`~her2lib.models`), training
  (:mod:`~her2lib.train`), fusion (:mod:`~her2lib.fusion`; class tasks :mod:`~her2lib.fusion_classes`),
  evaluation tables (:mod:`~her2lib.evaluate`), Grad-CAM (:mod:`~her2lib.gradcam`) and every plot
  (:mod:`~her2lib.figures`).
* **stages** (:mod:`~her2lib.stages`): one function per numbered notebook, taking the run's folders and the
  notebook's parameters; it reads earlier stages' files, writes its own, and prints the notices.
* **runner** (:mod:`~her2lib.runner`): the papermill batch (``python -m her2lib.runner --profile default``),
  notebook set-up, provenance and the run's ``index.html``.
"""
