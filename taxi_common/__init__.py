"""Data shared by every level: loading real or synthetic trips, preparing them, featurizing them.

Nothing here imports a level package, and importing this package has no side effects.
"""
