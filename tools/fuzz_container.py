"""Fuzz the .epr readers: for any bytes, `validate_bytes` must return a Report, never raise,
and no `eprpipe` command may crash, hang or destroy a file, on any file validate accepts.

Every case is one seed file plus one mutation strategy, both drawn from an RNG seeded with
"K:I" (run seed K, case index I), so a case is reproduced from those two numbers and the seed
list alone (and eprpipe's version, and --strategies if given). The seeds are the builtin
files made with the public API (torch-free) followed by the valid files of --seeds-dir,
sorted by name; each must validate before fuzzing starts, and the summary lists them with
their SHA-256. Strategies reach past the checksums (they recompute CRCs), into the zstd frames
(hostile frames), the ONNX graph (external data, domains, nesting; outputs that lie), the
manifest (hostile JSON; typed lies in the keys the tools read) and the element allowance
(padding and unknown sections that must not buy any); one family puts the bytes behind a FIFO,
a symlink, a device node, a directory or a sparse 1 GiB file, and points `decode -o` at such
nodes or at the input.

An exception escaping `validate_bytes` is a *foreign exception*: a bug to report, never to
hide. So is, on a file validate accepts, an exception escaping `eprpipe.cli.main` for `info`,
`info --json`, `decode` or `eval --dataset digits` (run in-process, output discarded: eval on
every case of the families aimed at it and on 1 in --eval-every of the others), a traceback on
their stderr, or a nonzero exit of info or decode. Filesystem cases run validate, info, decode
and eval on their nodes and also count a hang, a node replaced or removed and a temporary file
left behind. Those commands run with the address space capped at its size plus 2 GiB, so that
reading /dev/zero fails instead of taking the machine. A case over 1 s is *slow*; a case over
10 s is stopped by a per-worker alarm and counted as slow; a worker stuck inside C code for
30 s is killed by the parent and restarted after it. The parent keeps counts, never per-case
results, so --cases 1000000 runs in bounded memory.

This is the command line only: the seeds and case families are eprpipe.format.testing.fuzz_*,
the runner is eprpipe.fuzzing.

    python tools/fuzz_container.py --cases 20000 --jobs 2 --json fuzz.json
    python tools/fuzz_container.py --reproduce 0:1234 --dump case.epr
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from eprpipe.format.testing.fuzz_cases import IMAGE_TARGETED, STRATEGIES
from eprpipe.format.testing.fuzz_seeds import load_seeds
from eprpipe.fuzzing.runner import fuzz, reproduce
from eprpipe.fuzzing.summary import EVAL_EVERY, render

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEEDS_DIR = ROOT / "spec" / "vectors" / "valid"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--cases", type=int, help="cases to run (default 2000)")
    amount.add_argument("--seconds", type=float, help="run for this long instead")
    parser.add_argument("--seed", type=int, default=0, help="run seed K (case ids are K:I)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (1: in-process)")
    parser.add_argument(
        "--seeds-dir",
        type=Path,
        default=DEFAULT_SEEDS_DIR,
        help="valid .epr files to mutate, after the builtin seeds",
    )
    parser.add_argument(
        "--strategies",
        type=lambda text: [name for name in text.split(",") if name],
        default=[],
        metavar="A,B",
        help=f"only these families (case ids depend on the choice); known: {', '.join(STRATEGIES)}",
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=EVAL_EVERY,
        metavar="N",
        help=f"run eval on every N-th accepted case (default {EVAL_EVERY}), and on every one "
        f"of {', '.join(sorted(IMAGE_TARGETED))}",
    )
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="per-case peak Python/numpy allocation (tracemalloc; slower)",
    )
    parser.add_argument("--reproduce", metavar="K:I", help="re-run one case here, with traceback")
    parser.add_argument("--dump", type=Path, help="with --reproduce: write the case's bytes here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = load_seeds(args.seeds_dir, ROOT)
    if args.reproduce:
        return reproduce(seeds, args.reproduce, args.dump, args.strategies)
    cases = args.cases if args.cases is not None or args.seconds is not None else 2000
    summary = fuzz(
        seeds,
        run_seed=args.seed,
        cases=cases,
        seconds=args.seconds,
        jobs=args.jobs,
        trace_memory=args.trace_memory,
        progress=not args.no_progress,
        strategies=args.strategies,
        eval_every=max(1, args.eval_every),
    )
    hint = "" if args.seeds_dir == DEFAULT_SEEDS_DIR else f"--seeds-dir {args.seeds_dir} "
    hint += f"--strategies {','.join(args.strategies)} " if args.strategies else ""
    print(render(summary, f"python tools/fuzz_container.py {hint}"))
    if args.json:
        args.json.write_text(json.dumps(summary.as_json(), indent=2) + "\n")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
