"""Tools for testing .epr readers: build files that are valid, or break exactly what a test
aims at with every length and checksum right.

- `sections`: split a file into its sections, change them, join them again.
- `records`: tensor records, in memory for the writer or as hand-written bytes.
- `graphs`: small weightless ONNX graphs (one opset and IR version for all of them).
- `vectors`: the golden files of spec/vectors/ (tools/make_vectors.py writes them).
- `fuzz_seeds`, `fuzz_bytes`, `fuzz_models`, `fuzz_cases`: the fuzzer's seed files and case
  families (tools/fuzz_container.py runs them; `eprpipe.fuzzing` is its runner).

Part of the format wing, so it imports what `eprpipe.format` may: numpy, zstandard, onnx, the
standard library, `eprpipe.errors` and `eprpipe.format`.
"""
