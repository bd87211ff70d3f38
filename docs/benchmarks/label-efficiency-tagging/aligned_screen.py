"""Do a tagging fine-tune's own word features pay for the fast path's token head? (WNUT-16)

Per seed and budget N: the few-shot fine-tune (`TrainingConfig()` defaults) on the first N sentences
of a seeded random permutation of the pool (1,600 pool / 700 test sentences, `load_corpus`), and
strict span F1 on the test set of
- `finetune`: that fine-tune;
- `pre_n`, `pre_more`: the token head on the pretrained encoder's word features, fitted on N and on
  N + STEP sentences;
- `al_n`, `al_more`: the token head on the fine-tune's own word features (`WordEncoder` over its
  encoder, what the service builds from the checkpoint once it wins), fitted on N and on N + STEP
  sentences, the fine-tune still the one trained on N: what the fast path serves between retrains.

Run from the repository root (~2 min per fine-tune on 2 cores; writes aligned_screen.json here):

    HF_HUB_OFFLINE=1 PYTHONPATH=. python docs/benchmarks/label-efficiency-tagging/aligned_screen.py
"""
import json
import os
import time
from pathlib import Path

import numpy as np
from backend.engine.threads import wait_passively
wait_passively()
from backend.experiments.label_efficiency.config import load_corpus
from backend.experiments.label_efficiency.tagging import _words, _tags, tag_predictions
from backend.engine.metrics import evaluate
from backend.engine.proxy import FeatureEncoder
from backend.engine.word_features import WordEncoder
from backend.engine.token_head import TokenHead
from backend.engine.models.transformer import TransformerModel
from backend.engine.models.config import TrainingConfig

seeds = [int(s) for s in os.environ.get("SEEDS", "0,1,2").split(",")]
budgets = [int(s) for s in os.environ.get("BUDGETS", "40,80,120").split(",")]
STEP = int(os.environ.get("STEP", "40"))
corpus = load_corpus("wnut16", int(os.environ.get("POOL", "1600")), int(os.environ.get("TEST", "700")))
pool, test, schema = corpus.pool.examples, corpus.test.examples, corpus.pool.schema
pre = WordEncoder(FeatureEncoder("all-MiniLM-L6-v2", max_length=128))
t = time.perf_counter()
pool_pre, test_pre = pre.encode(_words(pool)), pre.encode(_words(test))
print(f"pretrained encode {time.perf_counter()-t:.0f}s", flush=True)

def head_f1(pool_words, test_words, rows, seed):
    head = TokenHead(schema, seed).fit(pool_words.take(rows), _tags([pool[i] for i in rows]))
    return evaluate(tag_predictions(head, test_words), test, schema)["main"]

out = []
for seed in seeds:
    perm = np.random.default_rng(seed).permutation(len(pool))
    for n in budgets:
        rows, more = perm[:n], perm[:n + STEP]
        model = TransformerModel("all-MiniLM-L6-v2", schema, TrainingConfig(seed=seed, max_length=128))
        report = model.fit([pool[i] for i in rows])
        ft = evaluate(model.predict(test), test, schema)["main"]
        enc = WordEncoder(FeatureEncoder("all-MiniLM-L6-v2", max_length=128, model=model.model.base_model,
                                         tokenizer=model.tokenizer))
        t = time.perf_counter()
        pool_al, test_al = enc.encode(_words(pool)), enc.encode(_words(test))
        secs = time.perf_counter() - t
        rec = dict(seed=seed, n=n, finetune=ft, fit_s=report.seconds, encode_s=secs,
                   pre_n=head_f1(pool_pre, test_pre, rows, seed), pre_more=head_f1(pool_pre, test_pre, more, seed),
                   al_n=head_f1(pool_al, test_al, rows, seed), al_more=head_f1(pool_al, test_al, more, seed))
        print(json.dumps(rec), flush=True)
        out.append(rec)
json.dump(out, open(os.environ.get("OUT", str(Path(__file__).with_name("aligned_screen.json"))), "w"), indent=1)
for key in ("finetune", "pre_n", "al_n", "pre_more", "al_more"):
    print(key, {n: round(float(np.mean([r[key] for r in out if r["n"] == n])), 3) for n in budgets})
