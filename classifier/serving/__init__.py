"""Serving: decoding uploads, the serving engine (ONNX graph), the per-process model cache with hot
swap, the not-a-dog calibration, warm-up, rate limits, the classify page and /api/predict.

Rooms: imaging.py, engine.py, cache.py, calibration.py, warmup.py, ratelimit.py, services.py
(predictions, feedback, calibrating a model), selectors.py, forms.py, views.py, api.py.
Imports classifier.models, versions' selectors and training/; never another domain's views or api.
"""
