"""Exception tree of ner_triton.

    NerTritonError              base class: every error this package raises on purpose
    +-- ConfigError             a setting (MODEL, DATA, EPOCHS, ...) has a bad value
    +-- DataError               a data file is missing, empty or malformed (names file and line)
    +-- ModelLoadError          a model checkpoint cannot be found or loaded
    +-- ExportError             ONNX export failed or its outputs drift from PyTorch
    +-- QualityGateError        a quantized variant lost more accuracy than allowed
    +-- EngineError             a TensorRT engine cannot be built, or was built for another TensorRT/GPU
    +-- InvalidInputError       a request to the service is malformed (empty text, bad UTF-8, ...)
    |   +-- BudgetExceededError a well-formed request costs more than one request may (bytes, windows,
    |                           tokens): split it (NerClient does)
    +-- CapacityError           the server refuses a costly request for now (the bulk capacity or the
    |                           dynamic batch's budget is taken): retry
    +-- ServerError             the local tritonserver cannot start (port taken, empty repository,
    |                           a model failed to load: Triton's reason is included)
    +-- ClientError             a call to the service failed
        +-- ServiceUnavailableError   no server answers at the address (start it with `make serve`)
        +-- DeadlineExceededError     the server did not answer within the deadline
        +-- RequestRejectedError      the server refused the request (bad input, unknown model)
            +-- InputRejectedError    the server named the request's input as bad (INVALID_ARGUMENT); it is
            |                         also an InvalidInputError
            +-- OverloadedError       the server shed the request (queue full or timed out, restarting): retry
            +-- AccessDeniedError     a gateway or Triton refused the credentials (header, token, client cert)

Each message says what was wrong and how to fix it, so command-line entry points print
``str(error)`` and exit non-zero instead of showing a traceback.
"""

from __future__ import annotations


class NerTritonError(Exception):
    """Base class of all errors raised on purpose by ner_triton."""


class ConfigError(NerTritonError, ValueError):
    """A setting has a bad value."""


class DataError(NerTritonError, ValueError):
    """A data file is missing, empty or malformed."""


class ModelLoadError(NerTritonError):
    """A model checkpoint cannot be found or loaded."""


class ExportError(NerTritonError):
    """ONNX export failed or its outputs differ from PyTorch beyond the tolerance."""


class QualityGateError(NerTritonError):
    """A quantized variant lost more entity F1 than the gate allows."""


class EngineError(NerTritonError):
    """A TensorRT engine cannot be built or loaded here (missing TensorRT/GPU, or built for another one)."""


class InvalidInputError(NerTritonError, ValueError):
    """A request to the service is malformed; the message says which text and why."""


class BudgetExceededError(InvalidInputError):
    """A well-formed request costs more than one request may (total bytes, windows or tokens): split it."""


class CapacityError(NerTritonError):
    """The server has no room for this costly request right now (its bulk slots or the batch's token budget
    are taken); the request was not run and may be retried (the server answers UNAVAILABLE)."""


class ServerError(NerTritonError):
    """The local Triton server cannot start or a model failed to load."""


class ClientError(NerTritonError):
    """A call to the NER service failed."""


class ServiceUnavailableError(ClientError):
    """No server answers at the address."""


class DeadlineExceededError(ClientError):
    """The server did not answer within the deadline."""


class RequestRejectedError(ClientError):
    """The server answered with an error for this request."""


class InputRejectedError(RequestRejectedError, InvalidInputError):
    """The server rejected the request's input (gRPC INVALID_ARGUMENT, HTTP 400): fix or split it."""


class OverloadedError(RequestRejectedError):
    """The server answered but shed the request (full queue, queue timeout, shutting down): worth a retry."""


class AccessDeniedError(RequestRejectedError):
    """The server or a gateway in front of it refused the request's credentials."""
