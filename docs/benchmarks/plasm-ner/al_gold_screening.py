"""The NER demo's successor offline with the gold the product picks: WNUT-16, 400 pool / 500
held-out (the demo's split), the 160 gold sentences chosen as the tagging fast path chooses them
(the cold start's 10 typical sentences, then `TaggingOrder` with the token head re-fitted after
every label), the acquisition fine-tune on them, then PLASM as the demo asks (3 teachers + the
acquisition model, successor on all gold + kept pseudo-labels); variants on one set of
pseudo-labels: uncertainty (today), entity (every pseudo sentence with a predicted entity), none,
and warm (today's filter, the successor started from the acquisition model's weights).

    HF_HUB_OFFLINE=1 python docs/benchmarks/plasm-ner/al_gold_screening.py SEED   # 0, 1, 2
    HF_HUB_OFFLINE=1 python docs/benchmarks/plasm-ner/al_gold_screening.py SEED warm \
        docs/benchmarks/plasm-ner/warm_start_seedSEED.json
    TEACHERS=1 HF_HUB_OFFLINE=1 python docs/benchmarks/plasm-ner/al_gold_screening.py SEED warm \
        docs/benchmarks/plasm-ner/warm_start_1teacher_seedSEED.json   # teachers besides the acquisition model
"""
import json, os, sys, tempfile, time
from dataclasses import replace
import numpy as np
from backend.engine.acquisition.cold_start import tagging_typical_order
from backend.engine.acquisition.order import ColdStart
from backend.engine.data import load_dataset
from backend.engine.errors import NotEnoughLabelsError
from backend.engine.metrics import evaluate
from backend.engine.plasm.pipeline import build_successor, pseudo_label, strip_labels
from backend.engine.proxy import FeatureEncoder
from backend.engine.token_head import TokenHead
from backend.engine.word_features import WordEncoder
from backend.experiments.label_efficiency.tagging import TaggingOrder
from backend.service.jobs.successor import plasm_options
from backend.service.settings import Settings

seed = int(sys.argv[1])
teachers = int(os.environ.get("TEACHERS", "3"))
variants = (sys.argv[2] if len(sys.argv) > 2 else "uncertainty,entity,none").split(",")
out_file = sys.argv[3] if len(sys.argv) > 3 else f"docs/benchmarks/plasm-ner/al_gold_seed{seed}.json"
ds = load_dataset("wnut16", max_examples=900, seed=seed)
order = np.random.default_rng(seed).permutation(len(ds))
pool = [ds.examples[i] for i in order[:400]]; held = [ds.examples[i] for i in order[400:]]
schema = ds.schema
t = time.perf_counter()
words = WordEncoder(FeatureEncoder("all-MiniLM-L6-v2", device="cpu")).encode([e.words for e in pool])
first = tagging_typical_order(words, 10, seed)
ordering = TaggingOrder(words, ColdStart(len(first), first), seed)
chosen: list[int] = []
is_labeled = np.zeros(len(pool), bool)
head = None
while len(chosen) < 160:
    picked = ordering.next(head, is_labeled, 1)
    chosen.extend(int(i) for i in picked); is_labeled[picked] = True
    try:
        head = TokenHead(schema, seed).fit(words.take(np.array(chosen)), [list(pool[i].tags) for i in chosen])
    except NotEnoughLabelsError:
        head = None
out = {"seed": seed, "teachers": teachers, "order_s": time.perf_counter() - t}
labeled = [pool[i] for i in chosen]
rest = [pool[i] for i in range(len(pool)) if not is_labeled[i]]
entity = lambda ex: any(tag != "O" for tag in ex.tags)
out["gold_entity_share"] = float(np.mean([entity(e) for e in labeled]))
out["rest_entity_share_true"] = float(np.mean([entity(e) for e in rest]))
unlabeled = [strip_labels(e) for e in rest]
opts = plasm_options(Settings.from_env(), {"teacher": "all-MiniLM-L6-v2", "successor": "all-MiniLM-L6-v2",
                     "filter": "uncertainty", "teachers": teachers, "successor_all_gold": True, "compare_gold_only": False,
                     "seed": seed})
t = time.perf_counter(); acq = opts.successor_factory(schema).new(seed); acq.fit(labeled)
out["acquisition"] = evaluate(acq.predict(held), held, schema)["main"]; out["acq_s"] = time.perf_counter() - t
print(out, flush=True)
t = time.perf_counter(); labels = pseudo_label(labeled, unlabeled, schema, opts, extra_teachers=[acq])
out["teachers_s"] = time.perf_counter() - t; out["teacher_dev"] = labels.teacher_dev["main"]
has = np.array([entity(e) for e in labels.pool])
out["pool_entity_share_predicted"] = float(has.mean())
start = tempfile.TemporaryDirectory()  # warm: a copy of the acquisition model, kept while its successor is scored
for variant in variants:
    t = time.perf_counter()
    if variant == "entity":
        idx = np.flatnonzero(has)
        sub = replace(labels, pool=[labels.pool[i] for i in idx], confidence=labels.confidence[idx],
                      pool_indices=labels.pool_indices[idx])
        res = build_successor(sub, replace(opts, filter="none"))
    elif variant == "warm":
        acq.save(start.name)  # the successor starts from the acquisition model's weights (same architecture)
        res = build_successor(labels, replace(opts, successor=start.name))
        variant = "warm_uncertainty"  # the key the committed warm_start_seed*.json hold
    else:
        res = build_successor(labels, replace(opts, filter=variant))
    out[variant] = evaluate(res.successors[res.chosen].predict(held), held, schema)["main"]
    out[variant + "_kept"] = res.sizes.pseudo_kept; out[variant + "_s"] = time.perf_counter() - t
    print(out, flush=True)
json.dump(out, open(out_file, "w"), indent=1)
start.cleanup()
