"""GPU path: TensorRT engines built from the QDQ ONNX models, the engine runner, and the device check.

``manifest`` and ``bound`` (the INT8 share of a graph's multiply-adds and the INT8-over-FP16 speed bound) need
neither a GPU nor TensorRT and are tested everywhere (the FP16 graph conversion is ``pipeline.fp16``, a build
step); ``engine``, ``runner`` and ``check`` import TensorRT and a CUDA binding (``cuda``: cuda-python, else
pycuda) lazily and say how to get them when missing.
"""
