"""The container fuzzer's runner (tools/fuzz_container.py is its command line).

Its cases come from `eprpipe.format.testing` (seeds and case families, torch-free and free of
onnxruntime); this package runs them: `validate_bytes` on every case, and `eprpipe.cli.main`
for info, decode and eval on every file validate accepts, in this process or in workers. It
drives the CLI, so it sits above it: nothing in eprpipe imports it.
"""
