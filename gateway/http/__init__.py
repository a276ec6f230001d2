"""The OpenAI-compatible HTTP API: protocol mapping onto the one pipeline (docs/http.md)."""
