"""`feasible-al distill`, `plasm` and `simulate-plasm` on dataset files with tiny models."""
from __future__ import annotations

import json
import tarfile

from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

from backend.cli import main
from tests.helpers.toy_data import toy_tagging, write_toy_csv

FAST = ["--epochs", "2", "--learning-rate", "1e-3", "--device", "cpu"]


def _write_conll(path, n):
    lines = []
    for ex in toy_tagging(n):
        lines += [f"{w}\t{t}" for w, t in zip(ex.words, ex.tags)] + [""]
    path.write_text("\n".join(lines))
    return path


def test_distill_cli_writes_half_depth_student(tmp_path, capsys):
    from tests.helpers.tiny_models import build_tiny_model

    teacher = build_tiny_model(tmp_path / "teacher", "bert", layers=4)
    data = write_toy_csv(tmp_path / "toy.csv", 80)
    code = main(["distill", "--dataset", str(data), "--teacher", str(teacher), "--device", "cpu",
                 "--output-dir", str(tmp_path / "student")])
    assert code == 0
    assert AutoModel.from_pretrained(tmp_path / "student").config.num_hidden_layers == 2
    assert "student: 2 of 4 layers" in capsys.readouterr().out


def test_plasm_cli_classification_export(tmp_path, tiny_bert, capsys):
    data = write_toy_csv(tmp_path / "toy.csv", 200)
    unlabeled = tmp_path / "pool.txt"
    unlabeled.write_text("a great film\nthe plot was dull\n")
    export = tmp_path / "out" / "succ"
    code = main(["plasm", "--dataset", str(data), "--teacher", str(tiny_bert), "--successor", "cnn",
                 "--gold-size", "50", "--unlabeled", str(unlabeled), "--tracin-checkpoints", "2",
                 "--export-dir", str(export), *FAST])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "successor_plasm" in out and "kept:" in out and "stage seconds" in out
    metrics = json.loads((export / "metrics.json").read_text())
    assert metrics["sizes"]["gold"] == 50 and metrics["sizes"]["pool"] > 50
    assert set(metrics["test_metrics"]) == {"teacher", "successor_plasm", "successor_gold_only"}
    model = AutoModelForSequenceClassification.from_pretrained(export)
    assert model.config.label2id.keys() == {"pos", "neg"}
    with tarfile.open(tmp_path / "out" / "succ.tar.gz") as tar:
        assert "succ/README.md" in tar.getnames()


def test_plasm_cli_tagging_transformer_successor(tmp_path, tiny_bert, tiny_electra, capsys):
    data = _write_conll(tmp_path / "toy.conll", 120)
    export = tmp_path / "tagger"
    code = main(["plasm", "--dataset", str(data), "--teacher", str(tiny_bert), "--successor", str(tiny_electra),
                 "--gold-size", "40", "--filter", "uncertainty", "--no-archive", "--export-dir", str(export), *FAST])
    assert code == 0, capsys.readouterr().err
    model = AutoModelForTokenClassification.from_pretrained(export)
    assert model.config.id2label[0] == "O"
    assert not (tmp_path / "tagger.tar.gz").exists()


def test_plasm_cli_reports_bad_input_in_one_line(tmp_path, tiny_bert, capsys):
    data = write_toy_csv(tmp_path / "toy.csv", 40)
    code = main(["plasm", "--dataset", str(data), "--teacher", str(tiny_bert), "--successor", "bilstm-crf",
                 "--gold-size", "20", "--export-dir", str(tmp_path / "x"), *FAST])
    assert code == 2
    assert "does not suit classification" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_simulate_plasm_cli(tmp_path, tiny_bert, capsys):
    from tests.helpers.tiny_models import build_tiny_model

    teacher = build_tiny_model(tmp_path / "teacher", "bert", layers=2)
    data = write_toy_csv(tmp_path / "toy.csv", 160)
    out = tmp_path / "sim"
    code = main(["simulate-plasm", "--dataset", str(data), "--teacher", str(teacher), "--student", "distill",
                 "--successor", "cnn", "--iterations", "1", "--seeds", "0", "1", "--seed-size", "16",
                 "--query-size", "16", "--distill-max-texts", "64", "--tracin-checkpoints", "2",
                 "--successor-epochs", "3", "--output-dir", str(out), *FAST])
    assert code == 0, capsys.readouterr().err
    payload = json.loads((out / "results.json").read_text())
    names = {r["configuration"] for r in payload["records"]}
    assert names == {"successor_self", "mismatch", "plasm", "plasm_no_filter", "student", "teacher"}
    summary = payload["summary"]
    assert [row["labeled"] for row in summary["plasm"]] == [16, 32]
    assert all(row["seeds"] == 2 for row in summary["mismatch"])
    assert {"teacher", "pseudo_label", "filter_tracin", "successor_plasm"} <= set(payload["stage_seconds"])
    assert payload["distillation"]["student_layers"] == 1
    assert (out / "learning_curve.png").stat().st_size > 0
    text = capsys.readouterr().out
    assert "(c) PLASM" in text and "PLASM stage" in text
