"""Datasets as arrays or image files: specs, resizing, folder splits (torch-free).

May import numpy, PIL, the standard library and `eprpipe.errors`; never torch or another wing.
"""
