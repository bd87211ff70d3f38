"""The harness: what drives the product from the outside, never part of it.

Launchers of a whole local stack on free ports (`processes`: Redis, gunicorn and RQ workers;
`label_studio`: a real Label Studio), the calls a person makes in Label Studio's UI (`ls_admin`),
and the end-to-end benchmarks of `feasible-al bench-backend` (`backend_bench`, `fast_latency`,
`service_loop`). Only `backend.cli`, `backend.demo` and the tests import this package; the product
(`backend.service`, `backend.engine`, `backend.labeling`, `backend.model`, `backend._wsgi`: the web
process and the workers) never does (tests/unit/test_architecture.py).
"""
