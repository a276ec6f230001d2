"""Upstream model providers behind one normalized request, response and chunk type."""
