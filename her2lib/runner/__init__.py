"""Runner layer: runs the numbered notebooks and records what ran.

* :mod:`~her2lib.runner.pipeline` executes the notebooks of one profile with papermill
  (``python -m her2lib.runner --profile default``);
* :mod:`~her2lib.runner.notebook` is the one ``setup`` call each notebook makes after its ``parameters`` cell;
* :mod:`~her2lib.runner.provenance` writes ``provenance.json`` (code, profile, data, packages, machine);
* :mod:`~her2lib.runner.report` writes the run's ``index.html``;
* :mod:`~her2lib.runner.nbstrip` strips outputs from the committed notebooks.

Imports point one way: runner -> stages -> science -> core (tests/test_architecture.py checks it).
"""
