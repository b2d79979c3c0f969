"""Parameter decoders: the basis entries and the arithmetic spec/FORMAT.md fixes bit for bit."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eprpipe.errors import EprError
from eprpipe.format.paramdecode import decode_rdft, decode_scalar, rdft_basis


def _decimal(expression: Callable[[], Decimal]) -> float:
    """Evaluate a closed form at 70 digits and round it once to float64."""
    with localcontext() as ctx:
        ctx.prec = 70
        return float(expression())


@pytest.mark.parametrize("k", range(1, 17))
def test_basis_is_orthonormal_and_close_to_libm(k: int) -> None:
    basis = rdft_basis(k)
    assert basis.shape == (k, k) and basis.dtype == np.float64
    assert np.abs(basis @ basis.T - np.eye(k)).max() < 4e-16 * k
    n = np.arange(k)
    rows = [np.full(k, 1 / math.sqrt(k))]
    for j in range(1, (k - 1) // 2 + 1):
        rows += [math.sqrt(2 / k) * np.cos(2 * np.pi * j * n / k)]
        rows += [math.sqrt(2 / k) * np.sin(2 * np.pi * j * n / k)]
    if k % 2 == 0:
        rows.append((-1.0) ** n / math.sqrt(k))
    assert np.abs(basis - np.array(rows)).max() < 2e-15


def test_basis_entries_are_the_nearest_doubles_of_closed_forms() -> None:
    two, three, five, six = Decimal(2), Decimal(3), Decimal(5), Decimal(6)
    b3, b4, b5, b6, b8 = (rdft_basis(k) for k in (3, 4, 5, 6, 8))
    assert b3[1, 1] == _decimal(lambda: -1 / six.sqrt())  # sqrt(2/3) cos(2pi/3)
    assert b3[2, 1] == _decimal(lambda: 1 / two.sqrt())  # sqrt(2/3) sin(2pi/3)
    assert b4.tolist() == [
        [0.5, 0.5, 0.5, 0.5],
        [math.sqrt(0.5), 0.0, -math.sqrt(0.5), 0.0],
        [0.0, math.sqrt(0.5), 0.0, -math.sqrt(0.5)],
        [0.5, -0.5, 0.5, -0.5],
    ]
    assert b5[1, 1] == _decimal(lambda: (2 / five).sqrt() * (five.sqrt() - 1) / 4)
    assert b6[1, 1] == _decimal(lambda: (1 / three).sqrt() / 2)
    assert b6[2, 1] == 0.5  # sqrt(1/3) * sqrt(3)/2, exactly
    assert b8[1, 1] == _decimal(lambda: two.sqrt() / 4)
    assert b8[2, 2] == 0.5 and b8[1, 2] == 0.0 and b8[1, 6] == 0.0  # exact values stay exact
    assert rdft_basis(2).tolist() == [[math.sqrt(0.5)] * 2, [math.sqrt(0.5), -math.sqrt(0.5)]]


def test_basis_is_a_private_copy() -> None:
    basis = rdft_basis(3)
    basis[0, 0] = 42.0
    assert rdft_basis(3)[0, 0] != 42.0
    with pytest.raises(EprError):
        rdft_basis(0)


def _exact_f32(value: Fraction) -> np.float32:
    """Round a rational to float32 via float64, which is exact for the products tested here."""
    as_double = float(value)
    assert Fraction(as_double) == value
    return np.float32(as_double)


@given(
    st.sampled_from([0.0185546875, 1.0, 0.5, 2.0**-24, 65504.0, -0.75, 3.0517578125e-05]),
    st.lists(st.integers(-(2**40) + 1, 2**40 - 1), max_size=50),
)
@example(step=-0.75, values=[0, 3])
def test_decode_scalar_is_one_exact_product_and_one_rounding(
    step: float, values: list[int]
) -> None:
    latents = np.array(values, dtype=np.int64)
    decoded = decode_scalar(step, latents)
    assert decoded.dtype == np.float32 and decoded.shape == latents.shape
    # IEEE multiplication: 0 under a negative step is -0.0, which a Fraction cannot carry.
    expected = [_exact_f32(Fraction(step) * v) if v else math.copysign(0.0, step) for v in values]
    assert decoded.tobytes() == np.array(expected, dtype=np.float32).tobytes()


def test_decode_scalar_keeps_shape_and_accepts_float16() -> None:
    latents = np.arange(-6, 6).reshape(3, 4)
    decoded = decode_scalar(np.float16(0.25), latents)
    assert decoded.shape == (3, 4)
    assert decoded.tolist() == (latents * 0.25).tolist()


@pytest.mark.parametrize(
    ("step", "latents", "message"),
    [
        (0.1, [1], "float16"),
        (float("inf"), [1], "float16"),
        (float("nan"), [1], "float16"),
        (70000.0, [1], "float16"),
        (0.5, [0.5], "integers"),
        (0.5, [2**40], "bound"),
        (0.5, [-(2**40)], "bound"),
    ],
)
def test_decode_scalar_rejects(step: float, latents: list, message: str) -> None:
    with pytest.raises(EprError, match=message):
        decode_scalar(step, np.array(latents))


def reference_rdft(steps: np.ndarray, latents: np.ndarray) -> np.ndarray:
    """Spec section 8.2 with Python floats, one entry at a time, in the normative order."""
    out_channels, in_channels, kh, kw = latents.shape
    basis_h, basis_w = rdft_basis(kh).tolist(), rdft_basis(kw).tolist()
    result = np.empty(latents.shape, dtype=np.float32)
    for o in range(out_channels):
        for i in range(in_channels):
            c = [
                [float(steps[m, n]) * float(latents[o, i, m, n]) for n in range(kw)]
                for m in range(kh)
            ]
            t = [[0.0] * kw for _ in range(kh)]
            for m in range(kh):
                for b in range(kw):
                    for n in range(kw):
                        t[m][b] = t[m][b] + c[m][n] * basis_w[n][b]
            for a in range(kh):
                for b in range(kw):
                    w = 0.0
                    for m in range(kh):
                        w = w + basis_h[m][a] * t[m][b]
                    result[o, i, a, b] = np.float32(w)
    return result


@settings(deadline=None, max_examples=40)
@given(
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
    st.integers(0, 2**32 - 1),
    st.sampled_from([3, 50, 5000, 2**39]),
)
def test_decode_rdft_matches_the_reference_bit_for_bit(
    shape: tuple[int, int, int, int], seed: int, scale: int
) -> None:
    rng = np.random.default_rng(seed)
    latents = rng.integers(-scale, scale + 1, size=shape)
    steps = rng.uniform(2**-10, 4, size=shape[2:]).astype(np.float16)
    decoded = decode_rdft(steps, latents)
    assert decoded.dtype == np.float32 and decoded.shape == shape
    assert decoded.tobytes() == reference_rdft(steps, latents).tobytes()


def reference_rdft_any_rank(steps: np.ndarray, latents: np.ndarray) -> np.ndarray:
    """Spec section 8.2 for kernels of any rank with Python floats, in the normative order: the
    last kernel axis first, each sum over ascending frequencies from 0.0."""
    kernel = latents.shape[2:]
    bases = [rdft_basis(k).tolist() for k in kernel]
    positions = list(np.ndindex(*kernel))
    result = np.empty(latents.shape, dtype=np.float32)
    for o, i in np.ndindex(*latents.shape[:2]):
        x = {at: float(steps[at]) * float(latents[(o, i, *at)]) for at in positions}
        for axis in reversed(range(len(kernel))):
            y = {}
            for at in positions:
                total = 0.0
                for m in range(kernel[axis]):
                    total = total + x[(*at[:axis], m, *at[axis + 1 :])] * bases[axis][m][at[axis]]
                y[at] = total
            x = y
        for at in positions:
            result[(o, i, *at)] = np.float32(x[at])
    return result


@settings(deadline=None, max_examples=40)
@given(
    st.sampled_from([(1,), (2,), (5,), (7,), (2, 3), (1, 2, 1), (3, 3, 3), (2, 1, 4)]),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(0, 2**32 - 1),
    st.sampled_from([3, 50, 2**39]),
)
def test_decode_rdft_of_any_rank_matches_the_reference_bit_for_bit(
    kernel: tuple[int, ...], out_channels: int, in_channels: int, seed: int, scale: int
) -> None:
    rng = np.random.default_rng(seed)
    shape = (out_channels, in_channels, *kernel)
    latents = rng.integers(-scale, scale + 1, size=shape)
    steps = rng.uniform(2**-10, 4, size=kernel).astype(np.float16)
    decoded = decode_rdft(steps, latents)
    assert decoded.dtype == np.float32 and decoded.shape == shape
    assert decoded.tobytes() == reference_rdft_any_rank(steps, latents).tobytes()


@pytest.mark.parametrize("shape", [(4, 2, 5), (3, 2, 3, 3, 3), (2, 3, 7), (2, 2, 4, 1, 6)])
def test_decode_rdft_of_any_rank_is_the_kron_basis_product(shape: tuple[int, ...]) -> None:
    """The map training uses (eprpipe.train.reparam.RdftDecoder): the row-major flattened
    coefficients times the Kronecker product of the per-side bases."""
    rng = np.random.default_rng(sum(shape))
    latents = rng.integers(-60, 61, size=shape)
    steps = rng.uniform(2**-8, 2, size=shape[2:]).astype(np.float16)
    kron = functools.reduce(np.kron, [rdft_basis(k) for k in shape[2:]])
    coefficients = (steps.astype(np.float64) * latents).reshape(-1, kron.shape[0])
    expected = (coefficients @ kron).reshape(shape)
    decoded = decode_rdft(steps, latents)
    assert decoded.dtype == np.float32 and decoded.shape == shape
    assert np.abs(decoded - expected).max() <= 1e-6 * np.abs(expected).max()


def test_decode_rdft_of_rank_4_is_the_2d_case() -> None:
    """The general order is the 2-D one of revision 5: the 2-D reference agrees bit for bit."""
    rng = np.random.default_rng(4)
    latents = rng.integers(-(2**30), 2**30, size=(3, 2, 4, 5))
    steps = rng.uniform(2**-10, 4, size=(4, 5)).astype(np.float16)
    assert (
        reference_rdft_any_rank(steps, latents).tobytes()
        == reference_rdft(steps, latents).tobytes()
        == decode_rdft(steps, latents).tobytes()
    )


def test_decode_rdft_inverts_the_forward_transform() -> None:
    rng = np.random.default_rng(0)
    latents = rng.integers(-20, 21, size=(4, 3, 5, 3))
    steps = np.full((5, 3), 0.125, dtype=np.float16)
    weights = decode_rdft(steps, latents).astype(np.float64)
    coefficients = np.einsum("ma,oiab,nb->oimn", rdft_basis(5), weights, rdft_basis(3))
    assert np.allclose(coefficients, 0.125 * latents, atol=1e-5)


def test_decode_rdft_golden() -> None:
    """Pins the decoded bits; a change here breaks every file already written."""
    latents = np.arange(-4, 5).reshape(1, 1, 3, 3) * 37
    steps = np.array([[0.5, 0.25, 0.125], [1.0, 2.0, 0.0625], [0.75, 1.5, 3.0]], dtype=np.float16)
    assert decode_rdft(steps, latents).tobytes().hex() == GOLDEN_RDFT


GOLDEN_RDFT = "acc25cc24a0918c2c38104c2d684b3429cbe3643235e7cc352d013c3327152c30f727243"


@pytest.mark.parametrize(
    ("steps", "latents", "message"),
    [
        (np.ones((3, 3)), np.ones((2, 3, 3), dtype=np.int64), "rdft needs"),
        (np.ones(()), np.ones((2, 3), dtype=np.int64), "rdft needs"),
        (np.ones((2,) * 4), np.ones((1,) * 2 + (2,) * 4, dtype=np.int64), "rdft needs"),
        (np.ones((3, 2)), np.ones((1, 1, 3, 3), dtype=np.int64), "rdft needs"),
        (np.full((3, 3), 0.1), np.ones((1, 1, 3, 3), dtype=np.int64), "float16"),
        (np.ones((3, 3)), np.ones((1, 1, 3, 3)), "integers"),
    ],
)
def test_decode_rdft_rejects(steps: np.ndarray, latents: np.ndarray, message: str) -> None:
    with pytest.raises(EprError, match=message):
        decode_rdft(steps, latents)
