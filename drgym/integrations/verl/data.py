"""Write a drgym dataset as verl's parquet: ``python -m drgym.integrations.verl.data --dataset NAME --out DIR``
(also ``drgym verl-data``). Needs only pyarrow; verl reads the file with its ``RLHFDataset``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drgym.data.records import QARecord
from drgym.errors import ConfigError
from drgym.integrations.verl.rows import row_from_record

__all__ = ["add_arguments", "main", "register", "run", "write_parquet"]


def write_parquet(records: Sequence[QARecord], path: str | Path, *, split: str = "train") -> Path:
    """Write ``records`` to ``path`` as verl rows (see :func:`~drgym.integrations.verl.rows.row_from_record`).

    Raises:
        ConfigError: There is no record, or a record has no gold answer (naming it): verl would accept the row
            and fail only when the episode is scored.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not records:
        raise ConfigError(f"no records to write to {path}")
    for i, record in enumerate(records):
        if not record.answers:
            raise ConfigError(f"record {i} ({record.id}) has no gold answer; verl rows need a ground truth")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([row_from_record(r, i, split) for i, r in enumerate(records)])
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)  # a reader never sees half a file
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (shared by ``drgym verl-data`` and ``python -m``)."""
    parser.add_argument("--dataset", required=True, help="drgym dataset name (see `drgym data list`)")
    parser.add_argument("--out", required=True, help="directory for the parquet file")
    parser.add_argument("--split", default="train", help="split name: the file is OUT/SPLIT.parquet")
    parser.add_argument("--data-source", action="append", default=None,
                        help="keep only this data source (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N records")


def run(args: argparse.Namespace) -> int:
    """Load the dataset, write ``OUT/SPLIT.parquet`` and print its path and row count."""
    from drgym.data import load_dataset

    records = load_dataset(args.dataset, data_source=args.data_source, limit=args.limit)
    path = write_parquet(records, Path(args.out) / f"{args.split}.parquet", split=args.split)
    print(f"{path}\t{len(records)} rows")
    return 0


def register(sub: argparse._SubParsersAction) -> dict[str, Any]:
    """Add ``drgym verl-data`` to the ``drgym`` command; returns its handler by name."""
    parser = sub.add_parser("verl-data", help="write a dataset as verl's parquet (prompt, reward_model, ...)")
    add_arguments(parser)
    return {"verl-data": run}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drgym.integrations.verl.data", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"drgym verl-data: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
