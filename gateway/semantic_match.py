"""What makes a new question match a stored one in the semantic cache, apart from Django so
that ``scripts/eval_semantic_cache.py`` applies the very same rule without the platform's
settings.
"""

from __future__ import annotations

import hashlib
import re

# The default similarity threshold: the lowest that gave no wrong hit on the hand-written
# near-miss set with WordLlama, and none either with the embedded Gemma 3 270M's embeddings
# (docs/semantic-cache.md has the figures).
# Higher is stricter; an alias sets its own for the embeddings model its officer chose.
DEFAULT_THRESHOLD = 0.995

_WORD = re.compile(r"\w+")


def word_order(text: str) -> str:
    """Two short hashes: of the question's words as a bag, and in order. Two questions with the
    same words in another order ("from savings to checking" / "from checking to savings") are
    different questions that embeddings, above all static ones, find identical: such a pair is
    never a hit. Hashes, so the store keeps no second copy of the question."""
    words = _WORD.findall(text.casefold())
    bag = hashlib.sha256(" ".join(sorted(words)).encode()).hexdigest()[:16]
    order = hashlib.sha256(" ".join(words).encode()).hexdigest()[:16]
    return f"{bag}:{order}"


def reordered(stored: str, asked: str) -> bool:
    """The same words as the stored question, in another order."""
    return stored.split(":")[0] == asked.split(":")[0] and stored != asked
