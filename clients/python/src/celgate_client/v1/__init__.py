"""Generated from proto/gateway/v1 by clients/python/generate.py. Do not edit."""
