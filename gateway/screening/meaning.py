"""The injection screen's meaning model: what a text says, not which words it uses.

The rules (``heuristics``) match wordings; a new paraphrase, a subtle request or a language
they do not list passes them. This model reads the text as the tokens of the embedded default
model's vocabulary (Gemma 3, 262,144 pieces over 140 languages) and their embeddings, where
"ignore", "disregard" and "overlook", or "password" and "密码", sit close together: what it learned
from one wording carries to its neighbours and translations.

A text is cut into windows of ``WINDOW`` tokens (half overlapping); a window's embedding is the
mean of its tokens'; one hidden layer gives the window a log-odds of being an attack; the text's
is its highest window's, so an instruction planted in a long document counts as much as one
alone. The screen adds ``MODEL_WEIGHT`` times that log-odds to the rules' (``injection``): strong
rule evidence still blocks, and the model both finds what the rules miss and speaks against a
weak rule hit on a text that reads as benign.

Trained by ``scripts/train_injection_model.py`` on the hand-written development sets only; the
files it writes (``data/meaning_*``) are what runs here: a per-token table (the embeddings
already multiplied by the first layer, int8), so serving needs NumPy and ``tokenizers``, not the
embeddings and not Gemma. Cost: a tokenizer pass (greedy longest match over Gemma's pieces, word
by word through a cache) and a table look-up per text, about 0.6 ms per 1,000 characters inside
the screen, and about 90 MiB per process (``scripts/eval_injection.py`` prints the screen's
latency).
"""

from __future__ import annotations

import functools
import gzip
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.screening import heuristics

# One request's texts are a batch of one or two: no thread pool for them (and none to break
# in a forked worker).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parent / "data"
TOKENIZER_FILE = "meaning_tokenizer.json.gz"
MODEL_FILE = "meaning_model.npz"
MANIFEST_FILE = "meaning_model.json"

WINDOW = 32  # tokens per window; windows overlap by half
MODEL_WEIGHT = 0.5  # the model's log-odds count half as much as the rules'
# How far the model may speak against the rules: a weak rule hit on a text that reads as benign
# is let through, a strong one still blocks.
MOST_AGAINST = 0.5
MOST_FOR = 6.0  # and how far for them: enough to block alone, never a certainty
# A long text has many windows, each one more chance of a high reading by accident: the highest
# window's log-odds lose this much per natural log of their number (a 10,000-character document
# of about 150 windows loses about 1.3).
WINDOWS_PENALTY = 0.25
SHORT = 8  # a text of fewer tokens says less: its log-odds shrink in proportion ("go", "hi")


@dataclass(frozen=True, slots=True)
class _Model:
    tokenizer: object  # tokenizers.Tokenizer
    space: list[int]  # the pieces of an empty word (two spaces in a row)
    table: np.ndarray  # (vocabulary, hidden) int8
    scale: np.ndarray  # (hidden,) per-column scale of the table
    bias: np.ndarray  # the hidden layer's bias for a text a person typed
    tool: np.ndarray  # added to it for a tool result
    w2: np.ndarray
    b2: float


@functools.cache
def _model() -> _Model:
    return load(DATA)


def load(directory: Path) -> _Model:
    """The model whose files ``scripts/train_injection_model.py`` wrote into ``directory``."""
    from tokenizers import Tokenizer

    raw = gzip.decompress((directory / TOKENIZER_FILE).read_bytes()).decode()
    tokenizer = Tokenizer.from_str(raw)
    space = tokenizer.encode_batch_fast(["a  b"], add_special_tokens=False)[0].ids[1:-1]
    with np.load(directory / MODEL_FILE) as files:
        return _Model(
            tokenizer=tokenizer,
            space=space,
            table=files["table"],
            scale=files["scale"],
            bias=files["bias"],
            tool=files["tool"],
            w2=files["w2"],
            b2=float(files["b2"][0]),
        )


def warm_up() -> None:
    """Load the tokenizer and the table (about 0.8 s) before the first request needs them."""
    _model()


def model_texts(text: str, role: str = "user") -> list[str]:
    """What the model reads of a text: its normalised form, and the normalised form of every
    payload encoded or split in it (base64, hex, joined pieces, ...), each scored on its own;
    the screen's own pass (``heuristics.read``), for training and tests."""
    return heuristics.read(text, role)[1]


def windows(count: int, window: int = WINDOW) -> list[tuple[int, int]]:
    """(start, end) of each window over ``count`` tokens: one if they fit, else half-overlapping."""
    if count <= window:
        return [(0, count)] if count else []
    step = window // 2
    return [(start, min(start + window, count)) for start in range(0, count - step, step)]


def evidence(model_logit: float) -> float:
    """The log-odds the model adds to the rules'."""
    return min(max(MODEL_WEIGHT * model_logit, -MOST_AGAINST), MOST_FOR)


def is_tool(role: str) -> bool:
    return role in heuristics.TOOL_ROLES


# Each word's pieces, per process: the tokenizer splits at spaces and reads each word alone, so a
# word's pieces never depend on its neighbours, and most words of a request were seen before.
# About 3 times faster than encoding the whole text (measured on the held-out texts); cleared
# when full.
_WORDS: dict[str, list[int]] = {}
_WORDS_MAX = 200_000


def token_ids(text: str, model: _Model | None = None) -> list[int]:
    """The model's token ids of ``text``: what ``model.tokenizer`` gives for the whole text, read
    word by word through a cache."""
    model = model or _model()
    if not text:
        return []
    words = text.split(" ")
    if not words[0]:  # a leading space stands for the word-start mark the tokenizer would add
        words = words[1:]
    cache = _WORDS if model is _model() else {}
    missing = [word for word in dict.fromkeys(words) if word and word not in cache]
    if missing:
        if len(cache) + len(missing) > _WORDS_MAX:
            cache.clear()
        encoded = model.tokenizer.encode_batch_fast(missing, add_special_tokens=False)  # type: ignore[attr-defined]
        for word, encoding in zip(missing, encoded, strict=True):
            cache[word] = encoding.ids
    ids: list[int] = []
    for word in words:
        ids.extend(cache[word] if word else model.space)
    return ids


def logit(parts: list[str], role: str = "user", model: _Model | None = None) -> float | None:
    """The model's log-odds that the text is an attack (its highest window), read in its
    ``role`` (a tool result is data the agent read, not the user's wish), or None for no tokens
    at all."""
    parts = [part for part in parts if part and not part.isspace()]
    if not parts:
        return None
    model = model or _model()
    bias = model.bias + model.tool if is_tool(role) else model.bias
    half = WINDOW // 2
    best: float | None = None
    for part in parts:
        ids = token_ids(part, model)
        count = len(ids)
        if not count:
            continue
        rows = model.table[ids]
        spans = np.asarray(windows(count), dtype=np.int64)
        if len(spans) == 1:
            sums = rows.sum(axis=0, dtype=np.int32)[None, :]
        else:  # each window is two half-windows (its start is a multiple of one): sum those once
            halves = np.add.reduceat(rows, np.arange(0, count, half), axis=0, dtype=np.int32)
            first = spans[:, 0] // half
            sums = halves[first] + halves[first + 1]
        lengths = (spans[:, 1] - spans[:, 0]).astype(np.float32)[:, None]
        hidden = np.maximum(sums * (model.scale / lengths) + bias, 0.0)
        value = float((hidden @ model.w2).max()) + model.b2
        value -= WINDOWS_PENALTY * math.log(len(sums))
        if count < SHORT:
            value *= count / SHORT
        best = value if best is None else max(best, value)
    return best
