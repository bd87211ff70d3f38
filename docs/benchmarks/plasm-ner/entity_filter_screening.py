"""NER demo's successor offline (as docs/benchmarks/plasm-ner/filter_screening.py): WNUT-16, 400 pool /
500 held-out, 160 random gold; acquisition fine-tune; PLASM as the demo asks (3 teachers + acq);
variants on one set of pseudo-labels: uncertainty (today), entity (every pseudo sentence with a
predicted entity, no other filter; built here by subsetting the pseudo-labels, not an engine option),
and a same-seed refit of the acquisition fine-tune (a determinism check: it must equal `acquisition`).

    HF_HUB_OFFLINE=1 python docs/benchmarks/plasm-ner/entity_filter_screening.py SEED   # 0, 1, 2
"""
import json, sys, time
from dataclasses import replace
import numpy as np
from backend.engine.data import load_dataset
from backend.engine.metrics import evaluate
from backend.engine.plasm.pipeline import build_successor, pseudo_label, strip_labels
from backend.service.jobs.successor import plasm_options
from backend.service.settings import Settings

seed = int(sys.argv[1])
ds = load_dataset("wnut16", max_examples=900, seed=seed)
order = np.random.default_rng(seed).permutation(len(ds))
pool = [ds.examples[i] for i in order[:400]]; held = [ds.examples[i] for i in order[400:]]
schema = ds.schema
labeled, unlabeled = pool[:160], [strip_labels(e) for e in pool[160:]]
opts = plasm_options(Settings.from_env(), {"teacher": "all-MiniLM-L6-v2", "successor": "all-MiniLM-L6-v2",
                     "filter": "uncertainty", "teachers": 3, "successor_all_gold": True, "compare_gold_only": False,
                     "seed": seed})
out = {"seed": seed}
t = time.perf_counter(); acq = opts.successor_factory(schema).new(seed); acq.fit(labeled)
out["acquisition"] = evaluate(acq.predict(held), held, schema)["main"]; out["acq_s"] = time.perf_counter() - t
print(out, flush=True)
t = time.perf_counter(); labels = pseudo_label(labeled, unlabeled, schema, opts, extra_teachers=[acq])
out["teachers_s"] = time.perf_counter() - t; out["teacher_dev"] = labels.teacher_dev["main"]
has = np.array([any(tag != "O" for tag in e.tags) for e in labels.pool])
out["pool_entity_share"] = float(has.mean())
# uncertainty (today)
t = time.perf_counter(); res = build_successor(labels, opts)
out["uncertainty"] = evaluate(res.successors[res.chosen].predict(held), held, schema)["main"]
out["uncertainty_kept"] = res.sizes.pseudo_kept; out["uncertainty_s"] = time.perf_counter() - t
print(out, flush=True)
# entity: only sentences with a predicted entity, all of them
idx = np.flatnonzero(has)
ent = replace(labels, pool=[labels.pool[i] for i in idx], confidence=labels.confidence[idx],
              pool_indices=labels.pool_indices[idx])
t = time.perf_counter(); res = build_successor(ent, replace(opts, filter="none"))
out["entity"] = evaluate(res.successors[res.chosen].predict(held), held, schema)["main"]
out["entity_kept"] = res.sizes.pseudo_kept; out["entity_s"] = time.perf_counter() - t
print(out, flush=True)
t = time.perf_counter(); g = opts.successor_factory(schema).new(seed); g.fit(labeled)
out["gold_only_same_seed_refit"] = evaluate(g.predict(held), held, schema)["main"]; out["gold_only_s"] = time.perf_counter() - t
print(out, flush=True)
json.dump(out, open(f"docs/benchmarks/plasm-ner/entity_filter_seed{seed}.json", "w"), indent=1)
