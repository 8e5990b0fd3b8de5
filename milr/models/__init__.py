"""Generator adapters for unified text-and-image models (Janus via transformers)."""
