"""What runs inside Triton: the python-backend adapters and the logic of the three steps.

Everything here is loaded by a python-backend stub, so it stays light: it imports the shared NER core
(``schema``, ``errors``, ``labels``, ``alignment``, ``decoding``) plus numpy, tokenizers, onnx and
onnxruntime - never torch, transformers, tqdm or the build pipeline. The tokenizer and postprocess steps
need only numpy and tokenizers (the NGC server image installs nothing more). ``tests/unit/test_structure.py``
imports every module here in a fresh interpreter and fails if one of those got loaded.

    adapters/     TritonPythonModel classes (the committed model.py files re-export them)
    steps.py      TEXT -> windows (Preprocessor); logits -> entities (Postprocessor): numpy and tokenizers only
    bert.py       ONNX Runtime over a ragged dynamic batch (BertRunner, length_groups)
    limits.py     what one request may hold (Limits, carried in the tokenizer step's config parameters)
    tokenizer.py  the model's tokenizer.json through the ``tokenizers`` library
    session.py    the ONNX Runtime session
    graph.py      facts read from the ONNX graph (embedding table sizes)
"""
