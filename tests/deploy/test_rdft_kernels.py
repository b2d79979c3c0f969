"""1-D and 3-D kernels decoded from rdft records of format 1.1 run as Conv weights.

The golden vector v11-conv1d-conv3d-rdft holds a Conv1d kernel (rank-3 record) and a Conv3d
kernel (rank-5 record); its decoded model runs in onnxruntime and computes the convolutions
of the decoded weights, checked here against a numpy transcription. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import eprpipe

VECTOR = Path(__file__).resolve().parents[2] / "spec/vectors/valid/v11-conv1d-conv3d-rdft.epr"


def _same_conv(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Cross-correlation with 'same' zero padding over every spatial axis, in float64."""
    spatial = weight.ndim - 2
    pads = [(0, 0), (0, 0)] + [(side // 2, side // 2) for side in weight.shape[2:]]
    windows = sliding_window_view(np.pad(x, pads), weight.shape[2:], axis=tuple(range(2, x.ndim)))
    axes = "defg"[:spatial]  # spatial positions, then the kernel's own axes
    kernel = "uvw"[:spatial]
    equation = f"ni{axes}{kernel},oi{kernel}->no{axes}"
    return np.einsum(equation, windows.astype(np.float64), weight.astype(np.float64))


def test_conv1d_and_conv3d_kernels_run_in_onnxruntime() -> None:
    weights = eprpipe.load_weights(VECTOR)
    assert weights["conv1d.weight"].shape == (4, 2, 5)
    assert weights["conv3d.weight"].shape == (3, 2, 3, 3, 3)
    rng = np.random.default_rng(3)
    signal = rng.standard_normal((2, 2, 8)).astype(np.float32)
    volume = rng.standard_normal((2, 2, 4, 4, 4)).astype(np.float32)
    session = eprpipe.session(VECTOR)
    features, voxels = session.run(["features", "voxels"], {"signal": signal, "volume": volume})
    expected_1d = _same_conv(signal, weights["conv1d.weight"])
    expected_3d = _same_conv(volume, weights["conv3d.weight"])
    assert np.abs(expected_1d).max() > 0 and np.abs(expected_3d).max() > 0
    np.testing.assert_allclose(features, expected_1d, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(voxels, expected_3d, rtol=1e-5, atol=1e-5)
