"""Parameter decoders in numpy: latents -> float32 weights with a fixed, portable arithmetic.

Every decoder computes the same bits (spec/FORMAT.md, "Decoder arithmetic"): products are exact
in float64, sums run in a fixed order with separate multiply and add, and the basis entries are
the correctly rounded values of the exact reals, computed here without libm.
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal, localcontext

import numpy as np

from eprpipe.errors import EprError
from eprpipe.format.structures import LATENT_BOUND

_PRECISION = 80  # decimal digits carried; the brief's floor is 60
CHUNK_ELEMENTS = 1 << 18  # latents decoded at a time: bounds the float64 temporaries


def _pi() -> Decimal:
    """pi to the current precision (the `decimal` module documentation recipe)."""
    with localcontext() as ctx:
        ctx.prec += 2
        three = Decimal(3)
        lasts, t, s, n, na, d, da = Decimal(0), three, three, 1, 0, 0, 24
        while s != lasts:
            lasts = s
            n, na = n + na, na + 8
            d, da = d + da, da + 32
            t = (t * n) / d
            s += t
    return +s


def _cos_sin(num: int, den: int, pi: Decimal) -> tuple[Decimal, Decimal]:
    """cos and sin of 2*pi*num/den; exact at multiples of a quarter turn, so zeros stay zero."""
    num %= den
    if (4 * num) % den == 0:
        exact = [(1, 0), (0, 1), (-1, 0), (0, -1)][4 * num // den]
        return Decimal(exact[0]), Decimal(exact[1])
    x = 2 * pi * num / den
    if 2 * num >= den:  # reduce to [-pi, pi) so the Taylor series converges quickly
        x -= 2 * pi
    sums = [Decimal(0), Decimal(0)]  # cos, sin
    term, k = Decimal(1), 0
    tiny = Decimal(10) ** -_PRECISION
    while abs(term) >= tiny:
        sums[k % 2] += -term if k % 4 >= 2 else term
        k += 1
        term = term * x / k
    return sums[0], sums[1]


@functools.cache
def _basis(k: int) -> np.ndarray:
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        dc = Decimal(1) / Decimal(k).sqrt()
        ac = (Decimal(2) / Decimal(k)).sqrt()
        pi = _pi()
        angles = [_cos_sin(n, k, pi) for n in range(k)]  # 2*pi*j*n/k repeats with period k
        rows = [[dc] * k]
        for j in range(1, (k - 1) // 2 + 1):
            pairs = [angles[j * n % k] for n in range(k)]
            rows.append([ac * c for c, _ in pairs])
            rows.append([ac * s for _, s in pairs])
        if k % 2 == 0:
            rows.append([dc if n % 2 == 0 else -dc for n in range(k)])
    basis = np.array([[float(str(v)) for v in row] for row in rows], dtype=np.float64)
    basis.flags.writeable = False
    return basis


def rdft_basis(k: int) -> np.ndarray:
    """Orthonormal real DFT basis (k, k): row m is frequency m, column n is position n.

    Row 0 is constant, rows 2j-1 / 2j are the cosine / sine of frequency j, and for even k the
    last row alternates in sign. Entries are the float64 nearest to the exact reals.
    """
    if k < 1:
        raise EprError(f"basis size must be positive, got {k}")
    return _basis(k).copy()


def as_float16(value: float | np.floating, what: str = "step") -> np.float16:
    """`value` as float16, refusing anything that is not exactly a finite float16."""
    with np.errstate(over="ignore"):
        half = np.float16(value)
    if not np.isfinite(half) or float(half) != float(value):
        raise EprError(f"{what} {value!r} is not a finite float16 value")
    return half


def _check_latents(latents: np.ndarray) -> None:
    if not np.issubdtype(latents.dtype, np.integer):
        raise EprError(f"latents must be integers, got dtype {latents.dtype}")
    if latents.size and not (
        int(latents.min()) > -LATENT_BOUND and int(latents.max()) < LATENT_BOUND
    ):
        raise EprError("latent outside the bound +-2**40")


def decode_scalar(step: float | np.floating, latents: np.ndarray) -> np.ndarray:
    """theta = float32(float64(step) * float64(latent)): one exact product, one rounding.

    Works through the latents CHUNK_ELEMENTS at a time, so the float64 temporaries stay small
    whatever the tensor's size (each element's arithmetic is the same either way).
    """
    latents = np.asarray(latents)
    _check_latents(latents)
    step64 = np.float64(as_float16(step))
    flat, out = latents.reshape(-1), np.empty(latents.size, dtype=np.float32)
    for start in range(0, flat.size, CHUNK_ELEMENTS):
        part = flat[start : start + CHUNK_ELEMENTS]
        out[start : start + part.size] = step64 * part.astype(np.float64)
    return out.reshape(latents.shape)


def decode_rdft(steps: np.ndarray, latents: np.ndarray) -> np.ndarray:
    """theta = the inverse separable real DFT of (steps * latent) per (out, in) kernel.

    Latents are (out, in, k1[, k2[, k3]]) and steps have the kernel's shape; for 2-D kernels
    theta = B_kh^T (steps * latent) B_kw. Kernels are decoded a block at a time (about
    CHUNK_ELEMENTS latents), so the float64 temporaries stay small; each kernel's arithmetic
    does not depend on the blocking.
    """
    latents = np.asarray(latents)
    steps = np.asarray(steps)
    if latents.ndim not in (3, 4, 5) or steps.shape != latents.shape[2:]:
        raise EprError(
            f"rdft needs latents (out, in, k1[, k2[, k3]]) and steps of the kernel's shape, got "
            f"{latents.shape} and {steps.shape}"
        )
    _check_latents(latents)
    kernel = steps.shape
    halves = np.array([as_float16(v) for v in steps.reshape(-1).tolist()], dtype=np.float16)
    scale = halves.reshape(kernel).astype(np.float64)
    kernels = latents.reshape(-1, *kernel)
    out = np.empty(kernels.shape, dtype=np.float32)
    block = max(1, CHUNK_ELEMENTS // max(1, math.prod(kernel)))
    for start in range(0, len(kernels), block):
        part = kernels[start : start + block]
        out[start : start + len(part)] = _rdft_kernels(scale * part.astype(np.float64))
    return out.reshape(latents.shape)


def _rdft_kernels(coefficients: np.ndarray) -> np.ndarray:
    """Inverse transform of (P, k1, ...) float64 coefficients, in the order spec 8.2 fixes:
    the last kernel axis first, then each earlier one; along an axis, frequency m replaces
    position a as X'[.., a, ..] = sum over m ascending, from 0.0, of X[.., m, ..] * B_k[m, a]."""
    values = coefficients
    for axis in range(values.ndim - 1, 0, -1):
        size = values.shape[axis]
        basis = _basis(size)
        row_shape = [1] * values.ndim
        row_shape[axis] = size
        lead = (slice(None),) * axis
        summed = np.zeros(values.shape, dtype=np.float64)
        for m in range(size):
            frequency = (*lead, slice(m, m + 1))  # X[.., m, ..], kept as an axis of size 1
            summed = summed + values[frequency] * basis[m].reshape(row_shape)
        values = summed
    return values
