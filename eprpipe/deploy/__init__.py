"""From an .epr file to a running model: decode to ONNX, onnxruntime sessions, evaluation.

Torch-free: may import `eprpipe.format`, `eprpipe.data`, `eprpipe.plugins`, onnx and
onnxruntime, never torch or `eprpipe.train`.
"""
