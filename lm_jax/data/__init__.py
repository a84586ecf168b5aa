"""Data: text sources, tokenizers, document-aware packing and the training input pipeline."""
