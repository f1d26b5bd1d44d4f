"""recbot: a generative recommender chatbot.

>>> from recbot import Recommender
>>> rec = Recommender.open("./.recbot")
>>> recs = rec.recommend("u1", query="something lighter than Dune", k=5)
"""

from recbot.config import Settings
from recbot.errors import (
    CatalogError,
    ConfigError,
    EncoderError,
    FilterError,
    IndexNotBuiltError,
    MissingExtraError,
    ModelNotFoundError,
    RecbotError,
    StoreError,
    UnknownItemError,
)
from recbot.recommender import Recommendations, Recommender
from recbot.types import BlurbUpdate, Interaction, Item, Reason, Recommendation

__version__ = "0.1.0"

__all__ = [
    "BlurbUpdate",
    "CatalogError",
    "ConfigError",
    "EncoderError",
    "FilterError",
    "IndexNotBuiltError",
    "Interaction",
    "Item",
    "MissingExtraError",
    "ModelNotFoundError",
    "Reason",
    "RecbotError",
    "Recommendation",
    "Recommendations",
    "Recommender",
    "Settings",
    "StoreError",
    "UnknownItemError",
    "__version__",
]
