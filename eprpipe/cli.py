"""The `eprpipe` command: a thin layer over the API.

Torch is imported only by the commands that train (`compress`, `demo`); `decode`, `eval`,
`info`, `validate` and `plugins` run on machines that have only the deployment dependencies.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from eprpipe import __version__
from eprpipe.errors import EprError

if TYPE_CHECKING:
    from eprpipe.train.config import TrainConfig

DEMO_ARCHITECTURE = "lenet5-caffe"
DEMO_DATASET = "digits"
DEMO_EPOCHS = 80
DEMO_LAMBDA = 16.0


def _demo_defaults() -> TrainConfig:
    """TrainConfig's defaults with the demo's epochs and λ."""
    from eprpipe.train.config import DEFAULTS

    return dataclasses.replace(DEFAULTS, epochs=DEMO_EPOCHS, lam=DEMO_LAMBDA)


# option -> (TrainConfig field, help): the default and, for a mode, the choices come from
# TrainConfig, so that they exist in one place and --help shows them.
CONFIG_OPTIONS = (
    ("--batch-size", "batch_size", "examples per training step"),
    ("--lr", "lr", "Adam LR of the latents"),
    ("--decoder-lr", "decoder_lr", "Adam LR of the parameter decoders (log steps)"),
    ("--prior-lr", "prior_lr", "Adam LR of the probability models"),
    ("--schedule", "schedule", "learning-rate schedule"),
    (
        "--decoder",
        "decoder",
        "rdft: frequency-domain decoder for k×k kernels, scalar elsewhere; "
        "auto: also 1-D and 3-D kernels (format 1.1 files); sq: scalar only",
    ),
    ("--prior", "prior", "density of the rate term"),
    ("--seed", "seed", "seed of every random draw"),
    ("--device", "device", "cpu, cuda or cuda:N"),
)


def _add_training_options(parser: argparse.ArgumentParser, epochs: str, lam: str) -> None:
    """The TrainConfig fields a user sets, with TrainConfig's defaults shown in --help.

    `--epochs` and `--lambda` default to None, which `_training_config` reads as the command's
    own default (`epochs` and `lam` say what it is): `compress` without an architecture runs
    the demo, whose defaults differ.
    """
    from eprpipe.train.config import DEFAULTS

    parser.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        default=None,
        help=f"rate weight λ: nats of task loss per bit per parameter; higher gives a smaller "
        f"file, lower a lower error (default: {lam})",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"passes over the training data (default: {epochs})",
    )
    for flag, field, text in CONFIG_OPTIONS:
        default = getattr(DEFAULTS, field)
        if isinstance(default, Enum):
            kind = {"choices": [member.value for member in type(default)], "default": default.value}
        else:
            kind = {"type": type(default), "default": default}
        parser.add_argument(flag, help=f"{text} (default: %(default)s)", **kind)
    parser.add_argument(
        "--init-step",
        type=float,
        default=DEFAULTS.init_step,
        metavar="STEP",
        help="initial step size of every parameter decoder (default: %(default).4g)",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip training the uncompressed model for comparison",
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes decoding image files (folder datasets such as imagenet; default: the "
        "cores divided among this machine's training processes, at most 8 each)",
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=DEFAULTS.eval_every,
        metavar="N",
        help="measure the test error after every N-th epoch and the last (default: "
        "%(default)s; 0: only the final measurement on the decoded ONNX model)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="WEIGHTS",
        help="start from these weights (.safetensors or a torch state dict)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run saved in the checkpoint"
    )
    parser.add_argument(
        "--no-augment", action="store_true", help="train without the dataset's augmentation"
    )
    parser.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast for the forward pass (GPU or CPU)"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="PATH",
        help="where the run saves itself (default: OUTPUT.ckpt; removed once OUTPUT is written)",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=None, metavar="STEPS", help="save every N steps"
    )
    parser.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=10.0,
        metavar="M",
        help="save every M minutes (default: %(default)g; 0 turns timed saves off)",
    )


def _add_read_limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--elements-per-byte",
        type=int,
        default=None,
        metavar="N",
        help="tensor elements a file may declare per byte it holds (default 512; raise it for "
        "files compressed beyond ~2,000x; see spec/FORMAT.md, Limits)",
    )


def _read_limits(args: argparse.Namespace):
    from eprpipe.format.limits import DEFAULT_LIMITS

    if args.elements_per_byte is None:
        return DEFAULT_LIMITS
    if args.elements_per_byte < 1:
        raise EprError("--elements-per-byte must be at least 1")
    return dataclasses.replace(DEFAULT_LIMITS, elements_per_byte=args.elements_per_byte)


def build_parser() -> argparse.ArgumentParser:
    from eprpipe.train.config import DEFAULTS

    demo_defaults = _demo_defaults()
    parser = argparse.ArgumentParser(
        prog="eprpipe",
        description="Compress neural networks with Entropy Penalized Reparameterization.",
    )
    parser.add_argument("--version", action="version", version=f"eprpipe {__version__}")
    commands = parser.add_subparsers(dest="command")

    compress = commands.add_parser("compress", help="train with EPR and write an .epr file")
    compress.add_argument("architecture", nargs="?", help="a registered architecture")
    compress.add_argument("--dataset", help="a registered dataset")
    compress.add_argument("-o", "--output", type=Path, help="the .epr file to write")
    _add_training_options(
        compress,
        epochs=f"the architecture's recipe where it has one, else {DEFAULTS.epochs}; without "
        f"ARCHITECTURE, the demo's {demo_defaults.epochs}",
        lam=f"the architecture's recipe where it has one, else {DEFAULTS.lam:g}; without "
        f"ARCHITECTURE, the demo's {demo_defaults.lam:g}",
    )

    demo = commands.add_parser(
        "demo", help=f"compress {DEMO_ARCHITECTURE} on the bundled {DEMO_DATASET} data"
    )
    demo.add_argument("-o", "--output", type=Path, default=Path("demo.epr"))
    _add_training_options(demo, epochs=str(demo_defaults.epochs), lam=f"{demo_defaults.lam:g}")

    decode = commands.add_parser("decode", help="turn an .epr file into an ONNX model")
    decode.add_argument("file", type=Path)
    decode.add_argument("-o", "--output", type=Path, required=True)
    _add_read_limits(decode)

    evaluate = commands.add_parser("eval", help="test error of an .epr file or ONNX model")
    evaluate.add_argument("model", type=Path, help="FILE.epr or MODEL.onnx")
    evaluate.add_argument("--dataset", required=True)
    evaluate.add_argument("--data-dir", type=Path, default=None)
    evaluate.add_argument(
        "--max-runtime-memory",
        type=int,
        default=1024,
        metavar="MIB",
        help="memory onnxruntime may allocate for the tensors the model computes (default "
        "1024); its weights must take less. A batch that needs more runs in halves; one image "
        "that needs more is an error",
    )
    evaluate.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop the evaluation after this many seconds (default: none); a model from an "
        "untrusted file decides how much it computes per image",
    )
    _add_read_limits(evaluate)

    info = commands.add_parser("info", help="what an .epr file holds, tensor by tensor")
    info.add_argument("file", type=Path)
    info.add_argument("--json", action="store_true", help="machine-readable output")
    _add_read_limits(info)

    validate = commands.add_parser(
        "validate", help="check .epr files against the format spec; exit 0 only if all are valid"
    )
    validate.add_argument("files", type=Path, nargs="+", metavar="FILE")
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    _add_read_limits(validate)

    commands.add_parser("plugins", help="list registered architectures and datasets")
    return parser


def _training_config(args: argparse.Namespace, defaults: TrainConfig) -> TrainConfig:
    """`defaults` with what the command line sets (--epochs and --lambda where given)."""
    return dataclasses.replace(
        defaults,
        epochs=args.epochs if args.epochs is not None else defaults.epochs,
        batch_size=args.batch_size,
        lam=args.lam if args.lam is not None else defaults.lam,
        lr=args.lr,
        decoder_lr=args.decoder_lr,
        prior_lr=args.prior_lr,
        schedule=args.schedule,
        decoder=args.decoder,
        prior=args.prior,
        init_step=args.init_step,
        seed=args.seed,
        device=args.device,
        bf16=args.bf16,
        eval_every=args.eval_every,
        progress=not args.quiet,
    )


def _require_torch(command: str) -> None:
    """A deploy-only install: say so in one line, before plugins try to build models."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise EprError(
            f"{command} trains with torch, which is not installed here: "
            "pip install torch==2.13.0, then pip install 'eprpipe[train]'"
        ) from None


def recipe_note(architecture: str, chosen: list[str], measured: str) -> str:
    """What compress prints when an architecture's recipe chose λ or the epochs."""
    note = f"{' and '.join(chosen)}: {architecture}'s recipe"
    if measured:
        note += f" (measured: {measured})"
    return note + "; raise --lambda for a smaller file, lower it for a lower error"


def _compress(
    args: argparse.Namespace,
    architecture: str,
    dataset: str,
    output: Path,
    defaults: TrainConfig,
    note: str | None = None,
) -> int:
    """Train and write `output`; the caller has checked for torch (`_require_torch`)."""
    from eprpipe.report import compress_report
    from eprpipe.train.api import compress_registered
    from eprpipe.train.checkpoint import CheckpointPolicy

    config = _training_config(args, defaults)
    checkpoint = CheckpointPolicy(
        path=args.checkpoint or output.with_name(output.name + ".ckpt"),
        every_steps=args.checkpoint_every,
        every_seconds=60 * args.checkpoint_minutes if args.checkpoint_minutes > 0 else None,
        resume=args.resume,
    )
    result = compress_registered(
        architecture,
        dataset,
        output,
        data_dir=args.data_dir,
        config=config,
        init_from=args.init_from,
        augment=not args.no_augment,
        baseline=not args.no_baseline,
        checkpoint=checkpoint,
        workers=args.workers,
    )
    from eprpipe.train.distributed import current_world

    if current_world().is_main:
        print(compress_report(result, architecture, dataset, config))
        if note:
            print(note)
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    if args.architecture is None and args.dataset is None:
        return cmd_demo(args)
    if args.architecture is None or args.dataset is None or args.output is None:
        raise EprError(
            "compress needs ARCHITECTURE, --dataset and -o FILE.epr (or no arguments: the demo)"
        )
    from eprpipe.plugins.manager import get_architecture
    from eprpipe.train.config import DEFAULTS

    _require_torch(args.command)  # the architecture hooks build torch modules
    recipe = get_architecture(args.architecture).recipe
    defaults = dataclasses.replace(
        DEFAULTS,
        lam=DEFAULTS.lam if recipe.lam is None else recipe.lam,
        epochs=DEFAULTS.epochs if recipe.epochs is None else recipe.epochs,
    )
    chosen = [
        text
        for text, applies in (
            (f"λ={defaults.lam:g}", recipe.lam is not None and args.lam is None),
            (f"{defaults.epochs} epochs", recipe.epochs is not None and args.epochs is None),
        )
        if applies
    ]
    note = recipe_note(args.architecture, chosen, recipe.measured) if chosen else None
    return _compress(args, args.architecture, args.dataset, args.output, defaults, note)


def cmd_demo(args: argparse.Namespace) -> int:
    output = args.output or Path("demo.epr")
    print(f"eprpipe demo: {DEMO_ARCHITECTURE} on the {DEMO_DATASET} data bundled with scikit-learn")
    _require_torch(args.command)
    return _compress(args, DEMO_ARCHITECTURE, DEMO_DATASET, output, _demo_defaults())


def cmd_decode(args: argparse.Namespace) -> int:
    from eprpipe.format.api import write_onnx

    written = write_onnx(args.file, args.output, limits=_read_limits(args))  # refuses the input
    print(f"wrote {written} ({written.stat().st_size:,} bytes)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from eprpipe.deploy.decode import evaluate_file
    from eprpipe.deploy.evaluate import RunLimits

    if not 1 <= args.max_runtime_memory <= 1 << 20:
        raise EprError("--max-runtime-memory must be from 1 to 1048576 MiB")
    if args.time_limit is not None and not args.time_limit > 0:
        raise EprError("--time-limit must be a positive number of seconds")
    result, examples = evaluate_file(
        args.model,
        args.dataset,
        args.data_dir,
        _read_limits(args),
        progress=True,
        run_limits=RunLimits(args.max_runtime_memory << 20, args.time_limit),
    )
    print(
        f"{args.model}: test error {100 * result.error:.2f} % "
        f"({result.total - result.correct} of {result.total} {args.dataset} {examples} wrong)"
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from eprpipe.format.container import read_epr
    from eprpipe.report import info_json, info_report

    contents, sizes = read_epr(args.file, limits=_read_limits(args))
    if args.json:
        print(json.dumps(info_json(contents, sizes), indent=2, sort_keys=True))
    else:
        print(info_report(args.file, contents, sizes))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """One line per valid file, one per violation; exit 1 if any file is invalid."""
    from eprpipe.format.validate import Report, Violation, validate_file

    reports = []
    for path in args.files:
        try:
            reports.append(validate_file(path, limits=_read_limits(args)))
        except EprError as error:
            report = Report(str(path), 0)
            report.violations.append(Violation("unreadable", str(error), None, None))
            reports.append(report)
    if args.json:
        print(json.dumps([report.as_json() for report in reports], indent=2, sort_keys=True))
    for report in [] if args.json else reports:
        if report.valid:
            print(f"{report.source}: valid ({report.file_bytes:,} bytes, {report.tensors} tensors)")
        for violation in report.violations:
            print(f"{report.source}: {violation.describe()}")
    return 0 if all(report.valid for report in reports) else 1


def cmd_plugins(args: argparse.Namespace) -> int:
    from eprpipe.plugins.manager import plugin_listing

    header = ("kind", "name", "provided by", "description")
    rows = [header] + [
        (
            row.kind,
            row.name,
            f"{row.distribution or row.plugin} {row.version or ''}".strip(),
            row.description,
        )
        for row in plugin_listing()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
    return 0


COMMANDS = {
    "compress": cmd_compress,
    "demo": cmd_demo,
    "decode": cmd_decode,
    "eval": cmd_eval,
    "info": cmd_info,
    "validate": cmd_validate,
    "plugins": cmd_plugins,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except EprError as error:
        print(f"eprpipe {args.command}: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `eprpipe info FILE | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"eprpipe {args.command}: interrupted", file=sys.stderr)
        return 130
