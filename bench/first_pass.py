"""The first pass over a long text, in process: CPU per 1,000 characters of the injection
screen and of the PII detector, on the ordinary documentation text of ``long_context.py``.

    .venv/bin/python bench/first_pass.py                 # this tree
    (cd /tmp/other-tree && /work/main/.venv/bin/python /work/main/bench/first_pass.py)

It imports the platform from the current directory, so run it from another tree's root (a
``git archive`` export) to compare. Medians of ``process_time`` over 400,000 characters per
size (at least 3 texts), each text new, after one warm-up text.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmplatform.settings")

SIZES = (1_000, 10_000, 100_000, 400_000)


def main() -> None:
    import django

    django.setup()
    from long_context import Texts, documentation

    from gateway.screening import injection
    from privacy import pii

    texts = Texts(documentation())
    injection.screen_text(texts.take(2_000))
    pii.detect(texts.take(2_000))
    print("| characters | screen, ms per 1,000 | PII, ms per 1,000 |\n|---|---|---|")
    for size in SIZES:
        screen, detect = [], []
        for _ in range(max(3, 400_000 // size)):
            text = texts.take(size)
            start = time.process_time()
            injection.screen_text(text)
            middle = time.process_time()
            pii.detect(text)
            end = time.process_time()
            screen.append((middle - start) * 1e6 / size)
            detect.append((end - middle) * 1e6 / size)
        print(f"| {size:,} | {statistics.median(screen):.3f} | {statistics.median(detect):.3f} |")


if __name__ == "__main__":
    main()
