"""What a run's notebook shows a reader (repro.cells.score_table, sample_generations)."""
from repro.cells import sample_generations, score_table
from repro.io import write_jsonl


def test_score_table_counts_examples_as_integers():
    scores = {"test_sets": {"dolly": {"mean": 40.123, "std": 1.5, "n": 35},
                            "sni": {"mean": 20.0, "std": 0.5, "n": 20}},
              "avg": {"mean": 30.0615, "std": 0.7}}
    table = score_table(scores)
    assert list(table.index) == ["dolly", "sni", "Avg"]
    assert table.loc["Avg", "examples"] == 55 and str(table["examples"].dtype).startswith("int")
    assert table.loc["dolly", "mean"] == 40.12 and table.loc["Avg", "mean"] == 30.06
    assert "55.0" not in table.to_string() and "35.0" not in table.to_string()


def test_sample_generations_takes_the_first_prompts_of_each_set_at_its_first_seed(tmp_path):
    def row(i, seed):
        return {"prompt": "...", "instruction": f"question {i}", "input": "", "references": [f"answer {i}", "other"],
                "prediction": f"guess {i} at {seed}", "seed": seed, "rougeL": 12.345}

    generations = tmp_path / "generations"
    write_jsonl(generations / "vicuna_seed20.jsonl", [row(i, 20) for i in range(3)])
    write_jsonl(generations / "vicuna_seed100.jsonl", [row(i, 100) for i in range(3)])
    write_jsonl(generations / "dolly_seed10.jsonl", [row(i, 10) for i in range(5)])
    table = sample_generations(tmp_path, per_set=2)
    assert list(zip(table["set"], table["seed"])) == [("dolly", 10), ("dolly", 10), ("vicuna", 20), ("vicuna", 20)]
    assert list(table["reference"]) == ["answer 0", "answer 1"] * 2
    assert table["prediction"].iloc[2] == "guess 0 at 20" and table["rougeL"].iloc[0] == 12.3
    assert sample_generations(tmp_path / "nothing").empty
