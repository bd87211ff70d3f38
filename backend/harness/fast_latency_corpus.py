"""The projects `bench-backend --mode fast-latency` imports: a real corpus's texts with their gold
annotations as Label Studio results, cycled to any pool size, and the seed labels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from backend.harness.common import choice_result, label_config, load_examples, load_tagged, ner_label_config

SEED_PER_CLASS = 5  # labels per class before the measured annotations (CV needs >= 2 per class)
SEED_SENTENCES = 10  # tagging: sentences with at least one entity labeled before the measured annotations
Task = Literal["classification", "ner"]
TASKS: tuple[Task, ...] = ("classification", "ner")


@dataclass(frozen=True)
class BenchCorpus:
    """The texts a project is imported from and the gold annotation of each (a Label Studio
    result), by the key that picks the seed labels: the class (classification) or whether the
    sentence holds an entity (ner)."""

    task: Task
    label_config: str
    texts: list[str]
    results: list[list[dict[str, Any]]]
    keys: list[str]
    note: str

    def tasks(self, n: int) -> tuple[list[str], list[list[dict[str, Any]]], list[str]]:
        """(texts, gold results, keys) of `n` tasks: the corpus cycled; tagging's repeats get a
        suffix word `` #<k>`` (k = the repeat; the gold spans keep their offsets), classification's
        repeat verbatim, as before."""
        distinct = len(self.texts)
        texts = [self.texts[i % distinct] + (f" #{i // distinct}" if self.task == "ner" and i >= distinct else "")
                 for i in range(n)]
        return texts, [self.results[i % distinct] for i in range(n)], [self.keys[i % distinct] for i in range(n)]

    def seed(self, keys: list[str]) -> list[int]:
        """Positions of the seed labels: `SEED_PER_CLASS` per class, or the first `SEED_SENTENCES`
        sentences with an entity."""
        wanted = ({k: SEED_PER_CLASS for k in set(self.keys)} if self.task == "classification"
                  else {"entity": SEED_SENTENCES})
        picked, count = [], dict.fromkeys(wanted, 0)
        for i, key in enumerate(keys):
            if key in wanted and count[key] < wanted[key]:
                picked.append(i)
                count[key] += 1
            if count == wanted:
                break
        return picked


def bench_corpus(task: Task, spec: str, n: int) -> BenchCorpus:
    """Up to `n` distinct texts of `spec` with their gold annotations, as a project of `task`."""
    if task == "classification":
        labels, examples = load_examples(spec, n)
        return BenchCorpus(task, label_config(labels), [e.text for e in examples],
                           [choice_result(e.labels[0]) for e in examples], [e.labels[0] for e in examples],
                           "tasks beyond the distinct texts repeat them (same order, same gold labels)")
    from backend.labeling import gold_tagging_results, parse_label_config

    types, sentences = load_tagged(spec, n)
    xml = ner_label_config(types)
    config = parse_label_config(xml)
    texts, results = [], []
    for sentence in sentences:
        text, regions = gold_tagging_results(sentence.words, sentence.tags, config)
        texts.append(text)
        results.append(regions)
    return BenchCorpus(task, xml, texts, results, ["entity" if r else "none" for r in results],
                       f"sentences beyond the {len(texts)} distinct ones repeat them with a suffix word ' #<k>' "
                       "(k = the repeat, tag O): every task is a distinct text, with the same gold spans")
