"""feasible-al: a Label Studio ML backend for computationally feasible deep active learning.

Four parts, and imports only run downwards through them:

- `backend.engine`: the framework-free engine (models and their one training loop, query
  strategies and UPS, PLASM). No Flask, Redis, RQ or Label Studio: it runs the same in a worker,
  an experiment or a notebook.
- `backend.experiments`: the paper's experiments, the engine driven with gold labels.
- `backend.labeling`: Label Studio's labeling configs, tasks and results <-> engine examples.
- `backend.service`: the Label Studio service (settings, runtime, Redis store, checkpoints, the
  Label Studio client, the Flask app and the RQ jobs).

`backend/model.py` (the model class) and `backend/_wsgi.py` (the gunicorn entry) sit at the top,
where a Label Studio ML backend keeps them; `backend.cli` is the `feasible-al` command and
`backend.demo` its `demo`, the product run end to end on a real Label Studio. `backend.harness`
(benchmark stacks, process launchers, Label Studio project set-up) drives the product from outside:
the CLI, the demo and the tests import it, the web process and the workers never do
(`tests/unit/test_architecture.py` checks this, the layers and the sizes).
"""
