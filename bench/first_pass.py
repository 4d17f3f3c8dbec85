"""The first pass over a long text, in process: CPU per 1,000 characters of the injection
screen and of the PII detector, on the ordinary documentation text of ``long_context.py``.

    .venv/bin/python bench/first_pass.py                 # this tree
    .venv/bin/python bench/first_pass.py --workers       # through the guard's workers
    (cd /tmp/other-tree && /work/main/.venv/bin/python /work/main/bench/first_pass.py)

It imports the platform from the current directory, so run it from another tree's root (a
``git archive`` export) to compare. Medians of ``process_time`` over 400,000 characters per
size (at least 3 texts), each text new, after one warm-up text.

``--workers`` measures instead what a request waits for when its long text goes to the guard's
worker processes (``LLMP_GUARD_OFFLOAD=process``): the wall time of one screen and one PII pass
over a new text sent to one worker (both passes in turn) and to two (at once, each in its
own), the round trip included; medians of 9 texts per size, the workers at normal priority.
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


def workers() -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, wait

    import django

    django.setup()
    from long_context import Texts, documentation

    from gateway.pipeline import text_checks

    texts = Texts(documentation())
    context = multiprocessing.get_context("forkserver")
    print("| characters | one worker, ms | two workers, ms |\n|---|---|---|")
    with ProcessPoolExecutor(2, mp_context=context, initializer=text_checks.warm_up) as pool:
        wait([pool.submit(text_checks.warm_up) for _ in range(2)])
        for size in SIZES[1:]:
            one, two = [], []
            for _ in range(9):
                text = texts.take(size)
                start = time.perf_counter()
                pool.submit(text_checks.check_texts, [(text, "user")], [(text, None)]).result()
                one.append((time.perf_counter() - start) * 1000)
                text = texts.take(size)
                start = time.perf_counter()
                futures = [
                    pool.submit(text_checks.check_texts, [(text, "user")], []),
                    pool.submit(text_checks.check_texts, [], [(text, None)]),
                ]
                wait(futures)
                two.append((time.perf_counter() - start) * 1000)
                time.sleep(0.02)
            print(f"| {size:,} | {statistics.median(one):.1f} | {statistics.median(two):.1f} |")


if __name__ == "__main__":
    if "--workers" in sys.argv[1:]:
        workers()
    else:
        main()
