"""level5_automation: the loop from monitoring to retraining to promotion to rollback, by policy.

``policy`` (the TOML policy), ``events`` (every decision with its reason), ``loop`` (the steps as
plain functions), ``training`` (retraining on a window of labelled traffic), ``simulation`` and
``report`` (the loop on a virtual clock through the real level-4 service), ``cli`` (``mlops-levels
level5 …``). Nothing is imported or started at import time.
"""
