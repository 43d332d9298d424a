"""Error responses of the python-backend steps, with the status code that tells whose fault it was.

* :class:`~ner_triton.errors.InvalidInputError` (bad or over-budget input): ``INVALID_ARG`` - gRPC
  ``INVALID_ARGUMENT``, HTTP 400. The client's mistake; retrying the same request cannot help.
* :class:`~ner_triton.errors.CapacityError` (a large request found no room): ``UNAVAILABLE`` - gRPC
  ``UNAVAILABLE``, HTTP 503. Nothing was run; a retry may succeed.
* anything else: ``INTERNAL`` - gRPC ``INTERNAL``, HTTP 500, logged with the model's name. A server fault.
"""

import triton_python_backend_utils as pb_utils

from ner_triton.errors import CapacityError, InvalidInputError


def error_response(exc: BaseException, model: str):
    """The response that carries ``exc`` to the client with its status code."""
    if isinstance(exc, InvalidInputError):
        error = pb_utils.TritonError(f"invalid input: {exc}", pb_utils.TritonError.INVALID_ARG)
    elif isinstance(exc, CapacityError):
        error = pb_utils.TritonError(str(exc), pb_utils.TritonError.UNAVAILABLE)
    else:
        pb_utils.Logger.log_error(f"{model}: {exc!r}")
        error = pb_utils.TritonError(
            f"internal error in {model}: {exc!r}; see the server's log", pb_utils.TritonError.INTERNAL
        )
    return pb_utils.InferenceResponse(error=error)
