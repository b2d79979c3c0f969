"""Untrained float tensors (BatchNorm statistics): quantized only where the error holds."""

from __future__ import annotations

import numpy as np
import pytest

from eprpipe.format.container import TensorRecord, decode_weights
from eprpipe.train.buffers import BIT_DEPTHS, compact_buffers, quantize


def raw(name: str, values: np.ndarray) -> TensorRecord:
    return TensorRecord(name, values.shape, values.dtype.name, None, None, values)


@pytest.mark.parametrize("bits", BIT_DEPTHS)
def test_quantize_keeps_every_value_within_half_a_step(bits: int) -> None:
    values = np.random.default_rng(bits).lognormal(0, 2, 64).astype(np.float32)
    record = quantize(raw("bn.running_var", values), bits)
    step = record.decoder.step
    assert step == 2.0 ** (np.floor(np.log2(values.max())) + 1 - bits)
    assert np.abs(record.latents).max() < 2**bits
    assert np.abs(decode_weights(record) - values).max() <= step / 2 * (1 + 1e-6)


def test_nothing_to_quantize_in_a_zero_tensor() -> None:
    assert quantize(raw("z", np.zeros(8, np.float32)), 8) is None


def test_the_coarsest_grid_that_keeps_the_predictions_wins() -> None:
    rng = np.random.default_rng(0)
    records = [
        raw("bn.running_mean", rng.normal(0, 1, 256).astype(np.float32)),
        raw("bn.running_var", rng.lognormal(0, 1, 256).astype(np.float32)),
        raw("bn.num_batches_tracked", np.array(7, np.int64)),  # not a float: kept verbatim
    ]
    seen = []

    def predictions(candidates: list[TensorRecord]) -> np.ndarray:
        """Pretend 1,000 predictions, of which a grid coarser than 10 bits changes 3."""
        steps = [c.decoder.step for c in candidates if c.decoder is not None]
        bits = None if not steps else round(np.log2(4.0 / min(steps)))
        seen.append(bits)
        classes = np.arange(1000) % 10
        if bits is not None and bits < 10:
            classes[:3] += 1
        return classes

    chosen, choice = compact_buffers(records, predictions)
    assert (choice.bits, choice.changed, choice.examples) == (10, 0, 1000)
    assert choice.coded_bytes < choice.raw_bytes == 2 * 256 * 4
    assert [c.decoder is None for c in chosen] == [False, False, True]
    assert seen == [None, 6, 8, 10]  # the exact values first, then coarse to fine


def test_verbatim_when_no_grid_keeps_the_predictions() -> None:
    records = [raw("bn.running_var", np.linspace(0.5, 2, 256).astype(np.float32))]
    chosen, choice = compact_buffers(
        records, lambda c: np.zeros(500) if c[0].decoder is None else np.ones(500)
    )
    assert chosen == records and choice.bits is None
