"""NER demo's successor offline: WNUT-16, 400 pool / 500 held-out (the demo's split), 160 labels
(random, or the first 160 of the pool), acquisition fine-tune on them with the backend's defaults,
then PLASM as the demo asks for it (3 teachers + the acquisition model, successor on all gold +
kept pseudo-labels), filter variants sharing the teachers' pseudo-labels."""
import json, sys, time
from dataclasses import replace
import numpy as np
from backend.engine.data import load_dataset
from backend.engine.metrics import evaluate
from backend.engine.plasm.pipeline import build_successor, pseudo_label, strip_labels
from backend.service.jobs.successor import plasm_options
from backend.service.settings import Settings

seed = int(sys.argv[1]); variants = sys.argv[2].split(",")
ds = load_dataset("wnut16", max_examples=900, seed=seed)
order = np.random.default_rng(seed).permutation(len(ds))
pool = [ds.examples[i] for i in order[:400]]; held = [ds.examples[i] for i in order[400:]]
schema = ds.schema
labeled, unlabeled = pool[:160], [strip_labels(e) for e in pool[160:]]
settings = Settings.from_env()
opts = plasm_options(settings, {"teacher": "all-MiniLM-L6-v2", "successor": "all-MiniLM-L6-v2", "filter": "uncertainty",
                                "teachers": 3, "successor_all_gold": True, "compare_gold_only": False, "seed": seed})
out = {"seed": seed}
t = time.perf_counter(); acq = opts.successor_factory(schema).new(seed); acq.fit(labeled)
out["acquisition"] = evaluate(acq.predict(held), held, schema)["main"]; out["acq_s"] = time.perf_counter() - t
print(out, flush=True)
t = time.perf_counter(); labels = pseudo_label(labeled, unlabeled, schema, opts, extra_teachers=[acq])
out["teachers_s"] = time.perf_counter() - t; out["teacher_dev"] = labels.teacher_dev
def stratified(labels):
    """confidence -> percentile within its stratum (sentences with a predicted entity / all O), so
    the least-confident drop takes the same share of each."""
    has = np.array([any(t != "O" for t in e.tags) for e in labels.pool])
    conf = np.asarray(labels.confidence, np.float64); out = np.zeros_like(conf)
    for m in (has, ~has):
        idx = np.flatnonzero(m)
        out[idx[np.argsort(conf[idx], kind="stable")]] = (np.arange(len(idx)) + 0.5) / max(len(idx), 1)
    out_has = has.mean()
    return replace(labels, confidence=out), float(out_has)
for v in variants:
    t = time.perf_counter()
    if v == "strat":
        lab2, share = stratified(labels); out["entity_share"] = share
        res = build_successor(lab2, replace(opts, filter="uncertainty"))
    else:
        res = build_successor(labels, replace(opts, filter=v))
    out[v] = evaluate(res.successors[res.chosen].predict(held), held, schema)["main"]
    out[v + "_kept"] = res.sizes.pseudo_kept; out[v + "_s"] = time.perf_counter() - t
    has = np.array([any(t != "O" for t in e.tags) for e in labels.pool])
    kept_pos = np.searchsorted(labels.pool_indices, res.kept_indices)
    out[v + "_kept_entity_share"] = float(has[kept_pos].mean()) if len(kept_pos) else None
    out["pool_entity_share"] = float(has.mean())
    print(out, flush=True)
json.dump(out, open(f"docs/benchmarks/plasm-ner/ner_plasm_{seed}_{'_'.join(variants)}.json", "w"), indent=1, default=str)
