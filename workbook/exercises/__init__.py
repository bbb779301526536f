"""The classroom exercises: answer keys the tests recompute, build-task checks, the checker.

``solutions/levelN.yaml`` is a level's key (see :mod:`workbook.exercises.keys`);
``workbook.exercises.levelN`` holds the functions that recompute its numbers and the checks of
its build tasks; :mod:`workbook.exercises.checker` grades an answer file; the ``mlops-levels
exercises`` commands are in :mod:`workbook.exercises.cli`.
"""
