"""The Label Studio service: the web process Label Studio calls and the RQ workers behind it.

The web process (`app`, `routes`, `api_errors`, `payloads`) only answers from Redis and enqueues
work, so it stays inside Label Studio's 1 s webhook timeout; the workers (`jobs`) train, score and
build successors. Both build one `runtime.Backend` from `settings` and keep state in Redis
(the `store` package, typed `records`) and checkpoints on disk (`checkpoints`, under
MODEL_DIR). `ls_client` is the only code that calls Label Studio; `ls_admin` and `processes` set
up projects and whole stacks for the demo, `bench-backend` and the tests.
"""
