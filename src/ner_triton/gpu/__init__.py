"""GPU path: TensorRT engines built from the QDQ ONNX models, a pycuda runner, and the device check.

``manifest`` and ``fp16`` need neither a GPU nor TensorRT (they are tested everywhere); ``engine``,
``runner`` and ``check`` import TensorRT/pycuda lazily and say how to get them when missing.
"""
