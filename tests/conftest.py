"""Shared fixtures: a real redis-server per test (tests/support/redis_server.py)."""

pytest_plugins = ["tests.support.redis_server"]
