"""TF Serving's REST ``:predict`` bodies mapped onto the exported signatures, both formats.

No server runs here: :func:`rest_request_to_inputs` maps a body onto a signature the way
TF Serving does (row format ``instances``, columnar format ``inputs``, values cast to the
signature's dtypes) and :func:`rest_response` builds the JSON it returns.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from maivar_tf.serving import (  # noqa: E402
    SIGNATURE_FEATURES,
    SIGNATURE_MEDIA,
    as_numpy_outputs,
)
from tests.serving.helpers import CLASSES, K  # noqa: E402
from tests.tiny_models import TINY_AUDIO_DIM, TINY_VIDEO_DIM  # noqa: E402


def rest_request_to_inputs(body: dict, signature) -> tuple[dict[str, np.ndarray], str]:
    """Maps a TF Serving REST ``:predict`` body onto a signature the way the server does.

    Row format (``instances``): a list of per-example objects keyed by input name, stacked
    along a new batch axis per input; columnar format (``inputs``): an object of batched
    values. Values are cast to the signature's dtypes (``{"b64": ...}`` only for strings).
    Returns the tensors and the format (``row``/``columnar``).
    """
    specs = signature.structured_input_signature[1]

    def convert(name, value):
        if name not in specs:
            raise ValueError(f"JSON object: does not have named input: {name}")
        spec = specs[name]
        if spec.dtype == tf.string:
            value = np.vectorize(lambda v: base64.b64decode(v["b64"]) if isinstance(v, dict)
                                 else v)(np.asarray(value, object))
        return tf.constant(np.asarray(value, spec.dtype.as_numpy_dtype), spec.dtype)

    if ("instances" in body) == ("inputs" in body):
        raise ValueError("Missing 'inputs' or 'instances' key")
    if "instances" in body:
        rows = body["instances"]
        if not rows:
            raise ValueError("'instances' is empty")
        if not isinstance(rows[0], dict):
            (only,) = specs
            rows = [{only: r} for r in rows]
        names = set(rows[0])
        if any(set(r) != names for r in rows):
            raise ValueError("Failed to process element: instances have different keys")
        return {n: convert(n, [r[n] for r in rows]) for n in names}, "row"
    cols = body["inputs"]
    if not isinstance(cols, dict):
        (only,) = specs
        cols = {only: cols}
    return {n: convert(n, v) for n, v in cols.items()}, "columnar"


def rest_response(outputs: dict, fmt: str) -> dict:
    """The JSON TF Serving returns: ``predictions`` (row) or ``outputs`` (columnar)."""
    def to_json(a):
        a = np.asarray(a)
        if a.dtype.kind in ("S", "O"):
            return np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else s,
                                otypes=[object])(a).tolist()
        return a.tolist()

    if fmt == "row":
        batch = len(next(iter(outputs.values())))
        return {"predictions": [{k: to_json(v[i]) for k, v in outputs.items()}
                                for i in range(batch)]}
    return {"outputs": {k: to_json(v) for k, v in outputs.items()}}


def request_body(signature: str, arrays: dict[str, np.ndarray], fmt: str) -> dict:
    """What a client sends over the wire (through JSON and back)."""
    if fmt == "row":
        n = len(next(iter(arrays.values())))
        body = {"signature_name": signature,
                "instances": [{k: x[i].tolist() for k, x in arrays.items()} for i in range(n)]}
    else:
        body = {"signature_name": signature, "inputs": {k: x.tolist() for k, x in arrays.items()}}
    return json.loads(json.dumps(body))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["row", "columnar"])
def test_rest_request_maps_onto_the_signatures(exported, fmt):
    rng = np.random.default_rng(5)
    cases = {
        SIGNATURE_FEATURES: {
            "video_features": rng.normal(size=(2, K, TINY_VIDEO_DIM)).astype(np.float32),
            "audio_features": rng.normal(size=(2, TINY_AUDIO_DIM)).astype(np.float32)},
        SIGNATURE_MEDIA: {"frames": rng.integers(0, 256, (2, K, 32, 40, 3), dtype=np.uint8),
                          "audio_image": rng.integers(0, 256, (2, 299, 299, 3),
                                                      dtype=np.uint8)}}
    for sig_name, arrays in cases.items():
        body = request_body(sig_name, arrays, fmt)
        sig = exported.loaded.signatures[body["signature_name"]]
        inputs, got_fmt = rest_request_to_inputs(body, sig)
        assert got_fmt == fmt
        for name, spec in sig.structured_input_signature[1].items():
            assert inputs[name].dtype == spec.dtype
        response = json.loads(json.dumps(rest_response(sig(**inputs), fmt)))
        direct = as_numpy_outputs(sig(**{k: tf.constant(x) for k, x in arrays.items()}))
        if fmt == "row":
            assert len(response["predictions"]) == 2
            rows = response["predictions"]
            probs = np.array([r["probabilities"] for r in rows])
            classes = [r["top_classes"] for r in rows]
        else:
            probs = np.array(response["outputs"]["probabilities"])
            classes = response["outputs"]["top_classes"]
        np.testing.assert_allclose(probs, direct["probabilities"], atol=1e-6)
        assert classes == direct["top_classes"].tolist()
        assert all(c in CLASSES for row in classes for c in row)

    with pytest.raises(ValueError, match="does not have named input: video"):
        rest_request_to_inputs({"instances": [{"video": [0.0]}]},
                               exported.loaded.signatures[SIGNATURE_FEATURES])
    with pytest.raises(ValueError, match="Missing 'inputs' or 'instances'"):
        rest_request_to_inputs({"signature_name": SIGNATURE_FEATURES},
                               exported.loaded.signatures[SIGNATURE_FEATURES])
