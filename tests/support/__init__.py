"""Helpers shared by tests: real servers started on loopback for one test or module."""
