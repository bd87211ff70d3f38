"""The RQ jobs: one active-learning iteration split across workers (`iteration` enqueues, `stages`
does the work: fetch labels, train, score chunks, push predictions) and the PLASM successor build
(`successor`). `common` holds the RQ plumbing both share; `worker` is the worker process,
`janitor` declares jobs dead when their worker is gone.
"""
