"""Retrieval: BERT embeddings, the Chroma store, the user profile and re-ranking."""
