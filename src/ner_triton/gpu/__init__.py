"""GPU path: TensorRT engines built from the QDQ ONNX models, a pycuda runner, and the device check.

``manifest`` needs neither a GPU nor TensorRT (tested everywhere; the FP16 graph conversion is
``pipeline.fp16``, a build step); ``engine``,
``runner`` and ``check`` import TensorRT/pycuda lazily and say how to get them when missing.
"""
