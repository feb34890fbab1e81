"""verl's parquet from a drgym dataset: the columns verl reads, the command, and rows without golds refused.

verl's own ``RLHFDataset`` reading the file back runs in test_verl_agent_loop.py (verl's venv).
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from drgym.cli import main as drgym_main
from drgym.data import load_dataset
from drgym.data.records import QARecord
from drgym.errors import ConfigError
from drgym.integrations.verl.data import main as data_main
from drgym.integrations.verl.data import write_parquet
from drgym.integrations.verl.rows import record_from_row


def test_columns_and_round_trip(tmp_path):
    records = load_dataset("demo")
    path = write_parquet(records, tmp_path / "x" / "train.parquet")
    rows = pq.read_table(path).to_pylist()
    assert {"prompt", "data_source", "reward_model", "extra_info", "agent_name"} <= set(rows[0])
    assert rows[0]["prompt"] == [{"role": "user", "content": records[0].question}]
    assert rows[0]["agent_name"] == "drgym"
    assert [r["extra_info"]["index"] for r in rows] == list(range(len(records)))
    back = [record_from_row(r) for r in rows]
    assert [(r.question, r.answers, r.source) for r in back] == [(r.question, r.answers, r.source) for r in records]


def test_rows_of_other_verl_data_are_read_from_prompt_and_ground_truth():
    row = {"data_source": "nq", "raw_prompt": [{"role": "user", "content": " Who? "}],
           "reward_model": {"ground_truth": "a<|answer_split|>b"}, "extra_info": {"index": 7}}
    record = record_from_row(row)
    assert (record.question, record.answers, record.source, record.id) == ("Who?", ["a", "b"], "nq", "7")
    with pytest.raises(ConfigError, match="row 7 .*no gold"):
        record_from_row({**row, "reward_model": {"ground_truth": ""}})
    with pytest.raises(ConfigError, match="row 7 .*no question"):
        record_from_row({**row, "raw_prompt": [{"role": "system", "content": "s"}]})


def test_a_record_without_gold_is_refused_before_writing(tmp_path):
    bad = [QARecord("q1", ["a"], "x", "r1"), QARecord("q2", [], "x", "r2")]
    with pytest.raises(ConfigError, match="record 1 .r2. has no gold"):
        write_parquet(bad, tmp_path / "t.parquet")
    assert not list(tmp_path.iterdir())


def test_commands(tmp_path, capsys):
    assert drgym_main(["verl-data", "--dataset", "demo", "--out", str(tmp_path), "--limit", "3"]) == 0
    assert pq.read_table(tmp_path / "train.parquet").num_rows == 3
    assert data_main(["--dataset", "demo", "--out", str(tmp_path), "--split", "test"]) == 0
    assert pq.read_table(tmp_path / "test.parquet").num_rows == 22
    assert data_main(["--dataset", "demoo", "--out", str(tmp_path)]) == 2
    assert "demo" in capsys.readouterr().err
