"""Blurb measures beyond overlap: faithfulness, fluency and personalisation. Pure.

Each takes continuations (the text after the fixed opening) with what each one may say
(``support.Support``), so recbot and every baseline are measured the same way:

- ``unsupported_rate``: share of continuations with a content word that neither the
  item's facts, the user's liked titles and own review words, nor the connectives
  support (``support.unsupported``);
- ``misquote_rate``: share that put words in the user's mouth (``support.misquotes``);
- ``salad_rate``: share that read as word salad by the rules and the n-gram model
  (``fluency.salad_reasons``), and ``fluency``: the mean n-gram log2 probability per
  token (higher is more fluent), both from a model fitted on the data, not the generator;
- ``personal_rate``: share that are personal beyond the opening
  (``support.personal_evidence``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recbot.generation.fluency import FluencyModel, salad_reasons
from recbot.generation.guard import OPENING_WORD
from recbot.generation.support import Support, misquotes, personal_evidence, unsupported
from recbot.types import Item

__all__ = ["blurb_measures"]


def blurb_measures(
    continuations: Sequence[str],
    items: Sequence[Item],
    supports: Sequence[Support],
    becauses: Sequence[Item | None],
    fluency: FluencyModel | None,
) -> dict[str, float]:
    """The measures above, each rounded to 4 places."""
    n = len(continuations)
    if n == 0:
        return {}
    rows = list(zip(continuations, items, supports, becauses, strict=True))
    unsupported_flags = [bool(unsupported(c, s)) for c, _, s, _ in rows]
    misquoted = [bool(misquotes(c, s)) for c, _, s, _ in rows]
    salad = [bool(salad_reasons(OPENING_WORD + " " + c.strip(), fluency)) for c, _, _, _ in rows]
    personal = [bool(personal_evidence(c, i, s, b)) for c, i, s, b in rows]
    out = {
        "unsupported_rate": float(np.mean(unsupported_flags)),
        "misquote_rate": float(np.mean(misquoted)),
        "salad_rate": float(np.mean(salad)),
        "personal_rate": float(np.mean(personal)),
    }
    if fluency is not None:
        out["fluency"] = float(np.mean([fluency.score(OPENING_WORD + " " + c.strip()) for c in continuations]))
    return {k: round(v, 4) for k, v in out.items()}
