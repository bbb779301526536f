"""The classic course service, for comparison only: module-level DictVectorizer and model.

    BASELINE_MODEL=dv_lr.bin gunicorn --preload -w 2 benchmarks.level2_baseline_app:app

Per request it builds a dict per ride, transforms them with the DictVectorizer and calls
``model.predict`` — the way the service is usually first written. No validation, no metrics.
"""

from __future__ import annotations

import os
import pickle

from flask import Flask, jsonify, request

with open(os.environ["BASELINE_MODEL"], "rb") as handle:
    dv, model = pickle.load(handle)

app = Flask(__name__)


def prepare_features(ride: dict) -> dict:
    """The course's feature dict: PU_DO as a string and the distance."""
    return {"PU_DO": f"{ride['PULocationID']}_{ride['DOLocationID']}",
            "trip_distance": ride["trip_distance"]}


@app.route("/predict", methods=["POST"])
def predict():
    """One ride → one prediction; a list of rides → a list of predictions."""
    body = request.get_json()
    if isinstance(body, list):
        preds = model.predict(dv.transform([prepare_features(r) for r in body]))
        return jsonify([{"duration": float(p), "model_version": "baseline"} for p in preds])
    pred = model.predict(dv.transform([prepare_features(body)]))[0]
    return jsonify({"duration": float(pred), "model_version": "baseline"})


_FLOOR_ONE = b'{"duration":12.345678901234567,"model_version":"v1"}'
_floor_answers: dict[int, bytes] = {}


def floor(environ: dict, start_response) -> list[bytes]:
    """Not a service: the ceiling of any Python service under the same gunicorn settings.

    A bare WSGI app (no Flask, no model, no validation) that reads the body and answers a
    constant JSON of the right size (one object, or a list with one object per ride).
    """
    body = environ["wsgi.input"].read()
    if body.lstrip().startswith(b"["):
        n = body.count(b"{")
        answer = _floor_answers.get(n)
        if answer is None:
            answer = _floor_answers[n] = b"[" + b",".join([_FLOOR_ONE] * n) + b"]"
    else:
        answer = _FLOOR_ONE
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(answer)))])
    return [answer]
