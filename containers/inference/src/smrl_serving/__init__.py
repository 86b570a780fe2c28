"""SageMaker MXNet serving contract for the sagemaker-rl-local inference image.

One job per module:

* `smrl_contract` (shared with the host and the training image) - paths, environment
  variables and limits SageMaker defines;
* `errors`      - exceptions that carry the HTTP status a client should see;
* `codecs`      - media types, Accept negotiation, request decoding and response encoding;
* `model`       - the default `model_fn`: an exported MXNet symbol + params, else ONNX;
* `onnx_compat` - lets MXNet's ONNX importer read MXNet-exported (Coach) ONNX files;
* `handlers`    - the user's inference module, with defaults for what it leaves out;
* `app`         - the ASGI application: /ping, /invocations, /execution-parameters;
* `limits`      - the server's timeouts and connection limit, and why;
* `protocol`    - uvicorn's HTTP protocol with header and body read deadlines;
* `server`      - the `serve` launcher (uvicorn, one process per worker).
"""
