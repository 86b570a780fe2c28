"""Exceptions that carry the HTTP status the client should get.

The default handlers raise them; a user's input_fn / output_fn may raise them too
(`from smrl_serving.errors import BadRequest`). Any other exception from user code is a
500 whose body is the exception's text.
"""


class InferenceError(Exception):
    """Base: `status` is the HTTP status of the response, the message its body."""

    status = 500


class BadRequest(InferenceError):
    status = 400


class UnsupportedMediaType(InferenceError):
    status = 415


class NotAcceptable(InferenceError):
    status = 406


class PayloadTooLarge(InferenceError):
    status = 413


class InferenceTimeout(InferenceError):
    """The request ran longer than SAGEMAKER_MODEL_SERVER_TIMEOUT."""

    status = 504


class ModelNotLoaded(InferenceError):
    status = 503
