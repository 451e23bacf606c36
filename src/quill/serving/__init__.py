"""Serving: thin adapters over ``Recognizer.predict``.

``api`` (FastAPI, ``quill serve``), ``lambda_handler`` (AWS Lambda), ``app`` (Gradio,
``quill app``), all through ``service.PredictionService`` for limits, cache, monitoring and
errors; ``runner`` runs the API in a thread for ``quill up`` and tests.
"""
