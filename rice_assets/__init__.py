"""Orchestration of the rice pipeline: Dagster definitions, assets, sensors, schedules, CLI.

Importing it makes the files the process creates owner-only (umask 077, `rice_models.atomic`), so
everything written under RICE_HOME by rice, Dagster or MLflow is private to its user.
"""

from rice_models.atomic import owner_only_files

owner_only_files()
