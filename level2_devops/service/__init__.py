"""Level 2's web service parts: ride validation, model sources, Prometheus metrics, gunicorn.

``level2_devops.app.create_app`` puts them together. Nothing here runs at import time.
"""
