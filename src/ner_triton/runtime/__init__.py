"""What runs inside Triton: the python-backend adapters and the logic of the three steps.

Everything here is loaded by a python-backend stub, so it stays light: it imports the shared NER core
(``schema``, ``errors``, ``labels``, ``alignment``, ``decoding``, ``signals``) plus numpy, tokenizers, onnx and
onnxruntime - never torch, transformers, tqdm or the build pipeline. The tokenizer and postprocess steps
need only numpy and tokenizers (the NGC server image installs nothing more). ``tests/unit/test_structure.py``
imports every module here in a fresh interpreter and fails if one of those got loaded.

    adapters/     TritonPythonModel classes (the committed model.py files re-export them); responses.py: the
                  error responses with their status codes (INVALID_ARG / UNAVAILABLE / INTERNAL)
    steps.py      TEXT -> windows (Preprocessor); logits -> entities (Postprocessor): numpy and tokenizers only
    bert.py       ONNX Runtime over a ragged dynamic batch (BertRunner, length_groups)
    limits.py     budgets of one request, one dynamic batch and one ONNX Runtime run (Limits, carried in the
                  models' config parameters)
    slots.py      host-wide bulk slots (flock) and the low-priority thread of the bulk lane
    fused.py      the local server's one-step ``ner``: the three steps over a dynamic batch, within the budgets
    tokenizer.py  the model's tokenizer.json through the ``tokenizers`` library
    session.py    the ONNX Runtime session
    graph.py      facts read from the ONNX graph (embedding table sizes)
    quality_metrics.py  the quality signals (ner_triton.signals) as Triton custom metrics, and the build's
                  baseline as gauges
"""
