"""Request decoding and response encoding for the default handlers.

Request bodies (Content-Type):
  application/json   [o0, o1, ...]                 one observation
                     [[...], [...]]                a batch, one observation per row
                     {"instances": [...]}          the same, TensorFlow-Serving style
                     {"inputs": [...]} or {"inputs": {"<input name>": [...]}}
  text/csv           one observation per line, comma-separated numbers
  application/x-npy  numpy .npy bytes (np.save), one observation or a batch

Response bodies (Accept):
  application/json   {"predictions": [[q0, q1], ...]}   one row per observation
                     (several network outputs: also "outputs": {name: rows, ...})
  text/csv           one line per observation
  application/x-npy  float32 .npy of shape (batch, ...)
"""
from __future__ import annotations

import csv
import io
import json

import numpy as np

from smrl_contract import CSV, JSON, NPY
from smrl_serving.errors import BadRequest, NotAcceptable, UnsupportedMediaType

DECODABLE = (JSON, CSV, NPY)
ENCODABLE = (JSON, CSV, NPY)


def media_type(header: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json` (empty header -> "")."""
    return (header or "").split(";", 1)[0].strip().lower()


def negotiate(accept: str | None, offered: tuple[str, ...], default: str) -> str:
    """The best of `offered` for an Accept header (RFC 9110 q-values and wildcards).

    No Accept header, or only `*/*`, gives `default`. Raises NotAcceptable when nothing fits.
    """
    if not accept or not accept.strip():
        return default
    for wanted in _media_ranges(accept):
        if wanted in ("*/*", "*"):
            return default
        if wanted.endswith("/*"):
            prefix = wanted[:-1]
            if default.startswith(prefix):
                return default
            matches = [media for media in offered if media.startswith(prefix)]
            if matches:
                return matches[0]
        elif wanted in offered:
            return wanted
    raise NotAcceptable(f"Cannot produce Accept {accept!r}: this model answers in {', '.join(offered)}.")


def _media_ranges(accept: str) -> list[str]:
    """The header's media ranges, best first: by q-value, then in the order given; q=0 left out."""
    ranges = []
    for position, item in enumerate(accept.split(",")):
        parts = [part.strip() for part in item.split(";")]
        quality = 1.0
        for parameter in parts[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if parts[0] and quality > 0:
            ranges.append((-quality, position, parts[0].lower()))
    return [media for _, _, media in sorted(ranges)]


# -- decoding ------------------------------------------------------------------------------

def decode(data: str | bytes, content_type: str) -> np.ndarray:
    """Request body -> float32 array (not yet checked against the model's input shape)."""
    content_type = media_type(content_type)
    if content_type not in DECODABLE:
        raise UnsupportedMediaType(
            f"Unsupported Content-Type {content_type or '(none)'!r}: send one of {', '.join(DECODABLE)}.")
    if not data or (isinstance(data, str) and not data.strip()):
        raise BadRequest("Empty request body: send one observation or a batch of them.")
    if content_type == NPY:
        return _decode_npy(data)
    text = data if isinstance(data, str) else _utf8(data)
    if content_type == JSON:
        return _decode_json(text)
    return _decode_csv(text)


def _utf8(data: bytes) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest(f"Request body is not UTF-8 text: {error}") from None


def _decode_json(text: str) -> np.ndarray:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise BadRequest(f"Request body is not valid JSON: {error}") from None
    if isinstance(value, dict):
        value = _unwrap(value)
    return _to_array(value, "JSON")


def _unwrap(document: dict):
    for key in ("instances", "inputs"):
        if key in document:
            value = document[key]
            if isinstance(value, dict):
                # {"inputs": {"observation": [...]}}: named inputs, one per model input.
                if len(value) != 1:
                    raise BadRequest(f'"{key}" names {len(value)} inputs; this handler takes one.')
                value = next(iter(value.values()))
            return value
    raise BadRequest('JSON object must have an "instances" or "inputs" key '
                     '(or send a list: one observation, or a list of them).')


def _decode_csv(text: str) -> np.ndarray:
    rows = [row for row in csv.reader(io.StringIO(text)) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise BadRequest("CSV body has no rows.")
    return _to_array(rows, "CSV")


def _decode_npy(data: bytes | str) -> np.ndarray:
    if isinstance(data, str):
        data = data.encode("latin-1")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise BadRequest(f"Request body is not a .npy array: {error}") from None
    return _to_array(array, "npy")


def _to_array(value, source: str) -> np.ndarray:
    try:
        # CSV cells are strings: float32 conversion parses them ("1.5", " 2").
        array = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError) as error:
        raise BadRequest(f"{source} body is not a numeric array of uniform shape: {error}") from None
    if array.size == 0:
        raise BadRequest(f"{source} body holds no values.")
    if not np.isfinite(array).all():
        raise BadRequest(f"{source} body holds NaN or infinite values; observations must be finite.")
    return array


# -- encoding ------------------------------------------------------------------------------

def encode(outputs: list[np.ndarray], names: list[str], accept: str) -> bytes:
    """Network outputs (each with the batch as first axis) -> response body in `accept`."""
    if accept == JSON:
        document = {"predictions": outputs[0].tolist()}
        if len(outputs) > 1:
            document["outputs"] = {name: output.tolist() for name, output in zip(names, outputs)}
        return json.dumps(document).encode()
    # CSV and npy are flat tables: several outputs sit side by side, one row per observation.
    table = outputs[0] if len(outputs) == 1 else np.concatenate(
        [output.reshape(len(output), -1) for output in outputs], axis=1)
    if accept == NPY:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(table, dtype=np.float32), allow_pickle=False)
        return buffer.getvalue()
    if accept == CSV:
        rows = table.reshape(len(table), -1) if table.ndim > 1 else table.reshape(-1, 1)
        # repr of a Python float of a float32 value round-trips exactly.
        return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows).encode()
    raise NotAcceptable(f"Cannot produce {accept!r}: this model answers in {', '.join(ENCODABLE)}.")
