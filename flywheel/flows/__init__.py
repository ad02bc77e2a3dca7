"""Prefect wrappers only: each flow chains the plain steps of a job; tasks pass paths and ids."""
