"""The paper's experiments: the engine driven with gold labels standing in for annotators.

`simulate` (full-pool scoring vs UPS vs random), `plasm_experiment` (successor self-acquired vs
mismatched vs PLASM), `bench` (scoring speed, UPS shares) and the shared `reports` (mean ± std
tables, plots, `results.json` whose config block replays a run). Nothing here is on the service's
path: the backend runs the engine directly.
"""
