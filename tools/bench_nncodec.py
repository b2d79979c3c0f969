"""Code float weights with NNCodec (MPEG NNC, DeepCABAC) at several qp values, for the benchmarks.

NNCodec cannot share eprpipe's environment cleanly (it pins numpy<2 and its import pulls
torchvision), so this tool runs in its own virtual environment and needs only numpy, nncodec
and the standard library; the benchmark calls it as a subprocess and evaluates the decoded
weights in eprpipe's environment:

    python3 -m venv /tmp/nnc-venv
    /tmp/nnc-venv/bin/pip install "torch==2.13.0"
    /tmp/nnc-venv/bin/pip freeze | grep '^torch==' > /tmp/nnc-torch.txt
    /tmp/nnc-venv/bin/pip install -c /tmp/nnc-torch.txt nncodec    # builds a C++ extension
    /tmp/nnc-venv/bin/python tools/bench_nncodec.py weights.npz --out nnc/ --qp -38 -32 -26 -20

Input: an .npz of float arrays (name → array, any float dtype, coded as float32): the
tensors to code, biases included if they are to be counted. NNCodec quantizes arrays of two
or more dimensions with the given qp and codes one-dimensional ones (biases) near-losslessly
at its non-weight qp (-75).

Output, in the folder `--out` (created if missing; each file written atomically):
- `qp{QP}.nnc`: the bitstream NNCodec returned for that qp (e.g. `qp-32.nnc`);
- `qp{QP}.npz`: the decoded arrays, float32, with the input's names and shapes;
- `nncodec.json`: {"nncodec": version, "input": path, "use_dq": bool, "results": [{"qp": int,
  "bitstream_bytes": int (the size of the .nnc file, which holds every input tensor),
  "bitstream": file name, "weights": file name, "encode_seconds": float,
  "decode_seconds": float}, ...]} in the order the qp values were given.

qp sets the quantization step: (4 + qp mod 4) · 2^(qp div 4 - 2) at NNCodec's default qp
density (2), exactly 2^(qp/4) at multiples of 4, so each +4 doubles the step (a smaller
stream, coarser weights). NNCodec's own default is -38. With dependent quantization (the
default; `--no-dq` turns it off) the encoder's trellis may give a zero weight a non-zero level:
a pruned model's exact zeros are not all kept.

Errors, NNCodec's included (it raises SystemExit), end the run with one line on stderr and
exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import secrets
import sys
import time
import types
from importlib.metadata import version
from pathlib import Path

import numpy as np

DEFAULT_QPS = (-38, -32, -26, -20)


class ToolError(Exception):
    """A one-line reason the run cannot go on."""


class _StubMeta(type):
    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub


class _Stub(metaclass=_StubMeta):
    """Any torchvision name: callable, subclassable, with any attribute."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub

    def __call__(self, *args: object, **kwargs: object) -> _Stub:
        return _Stub()


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub


def import_nncodec() -> types.ModuleType:
    """`nncodec.nnc`, imported with torchvision stubbed out.

    nncodec imports torchvision at module level for its dataset helpers only (ImageNet, CIFAR,
    VOC loaders and transforms), which coding a dict of arrays never calls; the torchvision
    wheel that pip picks beside torch 2.13's CPU wheel fails to load ("operator torchvision::nms
    does not exist"), so the stub keeps that failure away.
    """
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms"):
        sys.modules.setdefault(name, _StubModule(name))
    try:
        from nncodec import nnc
    except ImportError as err:
        raise ToolError(f"cannot import nncodec ({err}); run this with NNCodec's python") from err
    return nnc


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` beside `path`, fsync, rename over it: a reader never sees a partial file.

    eprpipe's own helper is not importable here (NNCodec's environment has no eprpipe).
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask decides
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The input's arrays as float32, refusing what is not a float array."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as err:
        raise ToolError(f"cannot read {path} as .npz: {err}") from err
    if not arrays:
        raise ToolError(f"{path} holds no arrays")
    for name, array in arrays.items():
        if not np.issubdtype(array.dtype, np.floating):
            raise ToolError(f"{path}: {name!r} is {array.dtype}, not a float array")
    return {name: array.astype(np.float32, order="C") for name, array in arrays.items()}


def code(
    nnc: types.ModuleType, weights: dict[str, np.ndarray], qp: int, use_dq: bool
) -> tuple[bytes, dict[str, np.ndarray], float, float]:
    """The bitstream for `weights` at `qp`, the arrays decoded from it, and both timings."""
    chatter = io.StringIO()  # NNCodec prints progress lines; keep stdout for this tool
    try:
        with contextlib.redirect_stdout(chatter):
            started = time.perf_counter()
            bitstream = nnc.compress(
                {name: np.atleast_1d(array) for name, array in weights.items()},  # no 0-d
                bitstream_path=None, return_bitstream=True, qp=qp, use_dq=use_dq,
            )  # fmt: skip
            encoded = time.perf_counter()
            decoded = nnc.decompress(bitstream)
            finished = time.perf_counter()
    except (SystemExit, Exception) as err:  # NNCodec reports input errors by SystemExit
        raise ToolError(f"NNCodec failed at qp {qp}: {type(err).__name__}: {err}") from None
    arrays = {name: np.asarray(decoded[name], np.float32) for name in decoded}
    if set(arrays) != set(weights):
        raise ToolError(f"NNCodec decoded {sorted(arrays)} at qp {qp}, not {sorted(weights)}")
    for name, array in weights.items():
        if arrays[name].size != array.size:
            raise ToolError(f"NNCodec decoded {arrays[name].shape} for {name!r}, not {array.shape}")
        arrays[name] = arrays[name].reshape(array.shape)  # a scalar went in as shape (1,)
    return bytes(bitstream), arrays, encoded - started, finished - encoded


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def run(weights_path: Path, out: Path, qps: list[int], use_dq: bool) -> list[dict]:
    nnc = import_nncodec()
    weights = read_weights(weights_path)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for qp in qps:
        bitstream, decoded, encode_s, decode_s = code(nnc, weights, qp, use_dq)
        stem = f"qp{qp}"
        write_atomically(out / f"{stem}.nnc", bitstream)
        write_atomically(out / f"{stem}.npz", npz_bytes(decoded))
        results.append(
            {
                "qp": qp,
                "bitstream_bytes": len(bitstream),
                "bitstream": f"{stem}.nnc",
                "weights": f"{stem}.npz",
                "encode_seconds": round(encode_s, 3),
                "decode_seconds": round(decode_s, 3),
            }
        )
        print(f"qp {qp}: {len(bitstream):,} B (encode {encode_s:.1f} s, decode {decode_s:.1f} s)")
    summary = {
        "nncodec": version("nncodec"),
        "input": str(weights_path),
        "use_dq": use_dq,
        "results": results,
    }
    write_atomically(out / "nncodec.json", json.dumps(summary, indent=1).encode() + b"\n")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help=".npz of float arrays to code")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--qp", type=int, nargs="+", default=list(DEFAULT_QPS))
    parser.add_argument(
        "--no-dq", action="store_true", help="plain scalar quantization, no dependent quantization"
    )
    args = parser.parse_args(argv)
    try:
        run(args.weights, args.out, args.qp, not args.no_dq)
    except (ToolError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
