"""celgate: a policy-as-code gateway for large language models."""
