"""The .epr container: the reference implementation of everything spec/FORMAT.md names.

Bit I/O, syntax and structures, limits, probability and geometric tables, range coding, layouts,
parameter-decoder arithmetic, container read and write, filling and checking the ONNX graph, and
validation. This wing may import only numpy, constriction, zstandard, onnx, the standard library
and `eprpipe.errors`: never torch, onnxruntime, PIL, pluggy or another eprpipe wing, so that a
second implementation can be checked against it line by line (contracts in pyproject.toml).
`eprpipe.format.testing` builds files for testing readers: golden vectors, fuzz cases, surgery.
"""
