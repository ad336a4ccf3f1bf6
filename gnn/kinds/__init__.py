"""Encoder bodies: ``(V, d)`` input embeddings to ``(V, d)`` outputs, one class per family of kinds."""
