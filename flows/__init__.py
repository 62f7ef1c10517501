"""Prefect flows and their command-line entry points."""
