"""recbot: a generative recommender chatbot."""
__version__ = "0.1.0"
