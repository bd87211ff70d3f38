"""The RQ jobs, each module one responsibility, imports running down this list:

- `common`: RQ plumbing (enqueue, meta keys, liveness, the /jobs view); `janitor`: dead jobs and stale flags
- `gate`: whether the fast path runs now and on which features; `ls_sync`: the pool cache, bulk pushes,
  deleting superseded versions in Label Studio; `feature_jobs`: pool features in chunk jobs
- `serving`: which model serves after an iteration (`engine.selection.decide_serving`)
- `fast_followups`: the rest of the top K and the proxy head's CV; `fast_update`: a new order within
  seconds of an annotation (`engine.acquisition.order.order_pool`)
- `stages` and `iteration`: one active-learning iteration split across workers; `finish_iteration`
  decides between "the proxy's fast update" and "push the fine-tune"
- `successor`: the PLASM successor build; `worker`: the worker process
"""
