"""Build the format's test vectors under spec/vectors/ (spec/FORMAT.md, "Test vectors").

    python tools/make_vectors.py            # check: regenerate in memory, compare with the files
    python tools/make_vectors.py --write    # rewrite the files (format changes only)

The vectors are built by eprpipe.format.testing.vectors; rewrite them only for a deliberate
format change, and say so in the spec.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eprpipe.format.testing import vectors

VECTORS = Path(__file__).resolve().parents[1] / "spec" / "vectors"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite spec/vectors/")
    args = parser.parse_args(argv)
    try:
        if args.write:
            print(f"wrote {vectors.write(VECTORS)} vectors to {VECTORS}")
            return 0
        stale, count = vectors.differing(VECTORS)
    except RuntimeError as err:  # a vector that no longer shows what it is for
        print(f"make_vectors: {err}", file=sys.stderr)
        return 1
    for name in stale:
        print(f"differs: {name}")
    print(f"{count - len(stale)} of {count} vectors identical")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
