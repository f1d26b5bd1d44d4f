"""recbot: a generative recommender chatbot.

>>> from recbot import Recommender
>>> rec = Recommender.open("./.recbot")
>>> recs = rec.recommend("u1", query="something lighter than Dune", k=5)
"""

from recbot.config import Settings
from recbot.errors import (
    CatalogError,
    ConfigError,
    FilterError,
    IndexNotBuiltError,
    ModelNotFoundError,
    RecbotError,
    UnknownItemError,
)
from recbot.recommender import Recommendations, Recommender
from recbot.types import Interaction, Item, Reason, Recommendation

__version__ = "0.1.0"

__all__ = [
    "CatalogError",
    "ConfigError",
    "FilterError",
    "IndexNotBuiltError",
    "Interaction",
    "Item",
    "ModelNotFoundError",
    "Reason",
    "RecbotError",
    "Recommendation",
    "Recommendations",
    "Recommender",
    "Settings",
    "UnknownItemError",
    "__version__",
]
