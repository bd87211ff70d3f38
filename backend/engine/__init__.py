"""The framework-free engine: what the paper computes, with no Flask, Redis, RQ or Label Studio.

`models` (one training loop behind fine-tuning, the classical successors and distillation),
`acquisition` (query strategies and UPS), `plasm` (teacher, pseudo-labels, filters, successor
export) and `data` (corpora) trade in the plain types of `types`. Long calls take the progress and
cancel callbacks of `callbacks`; files are written atomically through `io`. Keeping the engine
free of the service is what lets the same code run in an RQ worker, in `simulate` and in tests.
"""
