"""Fixtures for the simulator tests live in support.py (importable helpers); pytest finds them here."""

from wavu.mpesa_simulator.tests.support import clock, daraja, receiver, sim  # noqa: F401
