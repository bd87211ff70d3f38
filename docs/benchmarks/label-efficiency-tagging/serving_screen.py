"""Under the service's tagging order (cold start + MNLP, bench-labels' TaggingOrder), at a full
iteration after N + 40 sentences, where the fine-tune was trained on the first N: which estimate
picks the better model? Truth: test span F1 of what would serve: the token head on the pretrained
features fitted on N+40 (head wins) vs the token head on the fine-tune's word features fitted on
N+40 (fine-tune wins -> aligned features) -- and the fine-tune itself. Estimates recorded: the
fine-tune's span F1 on the 40 later sentences (ft_later), the token head's 5-fold CV span F1 on all
N+40 (head_cv, the earlier rule's), the token head fitted on N scored on the same 40 (head_paired,
today's rule). Run from the repository root (~2 min per fine-tune on 2 cores):

    HF_HUB_OFFLINE=1 PYTHONPATH=. python docs/benchmarks/label-efficiency-tagging/serving_screen.py
"""
import json
import os
from pathlib import Path

import numpy as np
from backend.engine.threads import wait_passively
wait_passively()
from backend.experiments.label_efficiency.config import LabelEfficiencyConfig, load_corpus
from backend.experiments.label_efficiency.runner import LabelEfficiency
from backend.experiments.label_efficiency.tagging import _words, _tags, tag_predictions
from backend.engine.metrics import evaluate, strict_span_f1
from backend.engine.proxy import FeatureEncoder
from backend.engine.word_features import WordEncoder
from backend.engine.token_head import TokenHead
from backend.engine.models.transformer import TransformerModel
from backend.engine.models.config import TrainingConfig

seeds = [int(s) for s in os.environ.get("SEEDS", "0,1,2").split(",")]
budgets = [int(s) for s in os.environ.get("BUDGETS", "40,80,120").split(",")]
STEP = 40
config = LabelEfficiencyConfig(corpora=("wnut16",), pool_size=3000, test_size=1000, seeds=tuple(seeds),
                               budgets=(10, 20, 30, 50, 80, 120, 160), finetune_budgets=(), methods=("proxy-uncertainty",),
                               cache_dir=os.environ.get("CACHE", "/tmp/le-cache"))
runner = LabelEfficiency(config)
corpus = load_corpus("wnut16", 3000, 1000)
runner._encode(corpus)
pool, test, schema = corpus.pool.examples, corpus.test.examples, corpus.pool.schema
out = []
def f1_on(head, words, examples):
    return evaluate(tag_predictions(head, words), examples, schema)["main"]
for seed in seeds:
    perm = np.random.default_rng(seed).permutation(len(pool))
    _, order = runner.tagging_curves(corpus, seed, perm)
    for n in budgets:
        rows, later, more = order[:n], order[n:n + STEP], order[:n + STEP]
        model = TransformerModel("all-MiniLM-L6-v2", schema, TrainingConfig(seed=seed, max_length=128))
        model.fit([pool[i] for i in rows])
        ft_test = evaluate(model.predict(test), test, schema)["main"]
        later_ex = [pool[i] for i in later]
        ft_later = evaluate(model.predict(later_ex), later_ex, schema)["main"]
        pw = corpus.pool_words
        head_cv = TokenHead(schema, seed).cross_validate(pw.take(more), _tags([pool[i] for i in more])).f1
        head_n = TokenHead(schema, seed).fit(pw.take(rows), _tags([pool[i] for i in rows]))
        head_paired = f1_on(head_n, pw.take(later), later_ex)
        head_more = TokenHead(schema, seed).fit(pw.take(more), _tags([pool[i] for i in more]))
        pre_more = f1_on(head_more, corpus.test_words, test)
        enc = WordEncoder(FeatureEncoder("all-MiniLM-L6-v2", max_length=128, model=model.model.base_model,
                                         tokenizer=model.tokenizer))
        more_ex = [pool[i] for i in more]
        al_head = TokenHead(schema, seed).fit(enc.encode(_words(more_ex)), _tags(more_ex))
        al_more = f1_on(al_head, enc.encode(_words(test)), test)
        rec = dict(seed=seed, n=n, ft_test=ft_test, ft_later=ft_later, head_cv=head_cv, head_paired=head_paired,
                   pre_more=pre_more, al_more=al_more)
        print(json.dumps(rec), flush=True)
        out.append(rec)
json.dump(out, open(Path(__file__).with_name("serving_screen.json"), "w"), indent=1)
