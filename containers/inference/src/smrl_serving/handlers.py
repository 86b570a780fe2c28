"""The user's inference module, with SageMaker's defaults for whatever it leaves out.

SageMaker's MXNet serving containers call, per request, either

    transform_fn(model, data, content_type, accept)

or, when the module has no transform_fn,

    output_fn(predict_fn(input_fn(data, content_type), model), accept)

with `model = model_fn(model_dir)` loaded once per worker. Each function the module does
not define falls back to the default here. Like SageMaker's inference toolkit, `data`
is a str for application/json and text/csv and bytes otherwise, and transform_fn /
output_fn may return either a body or `(body, content_type)`.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

import numpy as np

import smrl_contract as contract
from smrl_serving import codecs
from smrl_serving.errors import BadRequest
from smrl_serving.model import Signature, load_model, read_signature

log = logging.getLogger(__name__)

# SageMaker may mount the model elsewhere and say so in SM_MODEL_DIR.
MODEL_DIR = Path(os.environ.get(contract.MODEL_DIR_ENV) or contract.MODEL_DIR)
DEFAULT_CODE_DIR = MODEL_DIR / contract.SERVING_CODE_SUBDIR

HANDLER_NAMES = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")


def find_code_dir(submit_directory: str | None) -> Path:
    """The folder holding the user's module: SAGEMAKER_SUBMIT_DIRECTORY, else /opt/ml/model/code."""
    if not submit_directory:
        return DEFAULT_CODE_DIR
    parsed = urlparse(submit_directory)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme else submit_directory)
        if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
            # The SDK's sourcedir.tar.gz: unpack it privately (each worker has its own copy).
            target = Path(tempfile.mkdtemp(prefix="smrl-code-"))
            with tarfile.open(path) as archive:
                try:
                    archive.extractall(target, filter="data")
                except TypeError:  # Pythons before 3.11.4 have no extraction filters
                    archive.extractall(target)
            return target
        return path
    # s3:// and friends are out of reach offline; the SDK also repacks code into model/code.
    log.warning("%s=%s cannot be fetched offline; looking in %s", contract.SUBMIT_DIR_ENV,
                submit_directory, DEFAULT_CODE_DIR)
    return DEFAULT_CODE_DIR


def import_user_module(environ=os.environ) -> ModuleType | None:
    """Imports the module named by SAGEMAKER_PROGRAM (None when there is none to import)."""
    code_dir = find_code_dir(environ.get(contract.SUBMIT_DIR_ENV))
    program = environ.get(contract.PROGRAM_ENV)
    if not program:
        if not (code_dir / contract.DEFAULT_PROGRAM).is_file():
            return None
        program = contract.DEFAULT_PROGRAM
    path = code_dir / program
    if not path.is_file():
        raise FileNotFoundError(f"{contract.PROGRAM_ENV}={program}: no such file {path}")
    if (code_dir / "requirements.txt").is_file():
        log.warning("%s is not installed: this image serves offline. Bake extra packages into the image.",
                    code_dir / "requirements.txt")
    # Scripts written for SageMaker's MXNet images import Coach's ONNX export in model_fn.
    from smrl_serving import onnx_compat

    onnx_compat.install()
    sys.path.insert(0, str(code_dir))
    name = path.name.removesuffix(".py")
    log.info("importing user inference module %s from %s", name, code_dir)
    return importlib.import_module(name)


class Transformer:
    """Turns one request body into one response body, with the model loaded once."""

    def __init__(self, model_dir: Path, module: ModuleType | None, default_accept: str = contract.JSON):
        self.model_dir = Path(model_dir)
        self.default_accept = codecs.media_type(default_accept) or contract.JSON
        self.signature: Signature = read_signature(self.model_dir)
        user = {name: getattr(module, name, None) for name in HANDLER_NAMES} if module else {}
        self.user_functions = sorted(name for name, fn in user.items() if fn is not None)
        if user.get("transform_fn") and any(user.get(n) for n in ("input_fn", "predict_fn", "output_fn")):
            raise ValueError("The inference script defines transform_fn together with input_fn, predict_fn "
                             "or output_fn; SageMaker uses one or the other: keep transform_fn alone, or drop it.")
        self.model_fn = user.get("model_fn") or load_model
        self.input_fn = user.get("input_fn") or self.default_input_fn
        self.predict_fn = user.get("predict_fn") or self.default_predict_fn
        self.output_fn = user.get("output_fn") or self.default_output_fn
        self.transform_fn = user.get("transform_fn")
        # Only the default output_fn is known to produce JSON/CSV/npy: Accept is checked
        # up front (406 before any work) only when it is the one in use.
        self.negotiates_accept = self.transform_fn is None and "output_fn" not in user
        # SageMaker hands model_fn the folder as a str.
        self.model = self.model_fn(str(self.model_dir))

    def transform(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        content_type = codecs.media_type(content_type) or contract.JSON
        if self.negotiates_accept:
            accept = codecs.negotiate(accept, codecs.ENCODABLE, self.default_accept)
        elif not accept or accept.strip() in ("*/*", "*"):
            accept = self.default_accept
        data = body
        if content_type in contract.TEXT_TYPES:
            try:
                data = body.decode("utf-8")
            except UnicodeDecodeError as error:
                raise BadRequest(f"{content_type} body is not UTF-8: {error}") from None
        if self.transform_fn is not None:
            result = self.transform_fn(self.model, data, content_type, accept)
        else:
            result = self.output_fn(self.predict_fn(self.input_fn(data, content_type), self.model), accept)
        return _response(result, accept)

    # -- defaults --------------------------------------------------------------------------

    def default_input_fn(self, data, content_type: str):
        """JSON / CSV / npy -> float32 NDArray of shape (batch, *observation_shape)."""
        import mxnet as mx

        return mx.nd.array(self._batch(codecs.decode(data, content_type)), dtype=np.float32)

    def _batch(self, array: np.ndarray) -> np.ndarray:
        expected = self.signature.observation_shape
        if expected is None:
            return array if array.ndim >= 2 else array[None]
        if array.shape == expected:
            return array[None]
        if array.shape[1:] == expected:
            return array
        raise BadRequest(
            f"Wrong observation shape: the model takes observations of shape {list(expected)} "
            f"(or a batch of shape [N, {', '.join(map(str, expected))}]), got an array of shape {list(array.shape)}.")

    @staticmethod
    def default_predict_fn(data, model):
        """The network's forward pass."""
        return model(data)

    def default_output_fn(self, prediction, accept: str) -> tuple[bytes, str]:
        """Network output(s) -> body in the negotiated type (see `codecs`)."""
        outputs = _as_arrays(prediction)
        names = self.signature.output_names
        if len(names) != len(outputs):
            names = [f"output{i}" for i in range(len(outputs))]
        return codecs.encode(outputs, names, accept), accept


def _as_arrays(prediction) -> list[np.ndarray]:
    if isinstance(prediction, (list, tuple)) and prediction and all(hasattr(p, "asnumpy") or isinstance(p, np.ndarray)
                                                                    for p in prediction):
        items = list(prediction)
    else:
        items = [prediction]
    return [item.asnumpy() if hasattr(item, "asnumpy") else np.asarray(item) for item in items]


def _response(result, accept: str) -> tuple[bytes, str]:
    """A handler's result -> (bytes, content type). Both SageMaker return styles are accepted."""
    body, content_type = result if isinstance(result, tuple) and len(result) == 2 else (result, accept)
    if isinstance(body, str):
        return body.encode("utf-8"), content_type
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), content_type
    if isinstance(body, (dict, list)):
        return json.dumps(body).encode(), contract.JSON
    raise TypeError(f"The inference handler returned {type(body).__name__}; "
                    "return str or bytes (or a (body, content_type) tuple).")
