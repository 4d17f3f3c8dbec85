"""Install llama-cpp-python (the embedded model's runtime) as a build that runs on any CPU of
this architecture, and cache that build under a key of the flags it was made with.

Run by ``make install`` before the project's own install; ``make local-model-rebuild`` passes
``--rebuild``. Why: PyPI ships llama-cpp-python as source only, and its default build uses the
build machine's own instruction sets (``GGML_NATIVE``). Such a build crashed on an Intel Xeon
with AMX, and pip's wheel cache hands a wheel built on one CPU to the next machine by version
alone. So:

- **The build is portable.** ``GGML_NATIVE=OFF`` with ``GGML_BACKEND_DL=ON`` and
  ``GGML_CPU_ALL_VARIANTS=ON``: llama.cpp is built once per instruction-set level (x86-64
  baseline, SSE4.2, AVX, AVX2, AVX-512 and its extensions, ...) as separate libraries, and
  ``llmplatform.local_model_server`` loads the best one this CPU runs when it starts.
- **The CPU variants sit beside libllama** (``llama_cpp/lib``): ggml's install rules put them in
  a top-level ``bin/`` and duplicates of the libraries in ``lib/`` of site-packages; the wheel
  is repacked (with the ``wheel`` tool) without those, before it is cached.
- **pip's cache is not used for it** (``--no-cache-dir``). The wheel is kept in
  ``$LLMP_WHEEL_CACHE`` (default ``~/.cache/llmplatform/wheels``) in a folder named by a hash
  of the version, the CMake flags, the architecture, the Python ABI and the compiler, so a
  build with other flags is never reused in its place.
- **The install is checked**: a marker in the virtualenv records the key of the installed
  build; a llama-cpp-python installed any other way (an older native build, say) is replaced.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "llama-cpp-python"
MARKER = Path(sys.prefix) / ".llama-cpp-build"

# The flags every build gets. mtmd (multimodal projectors) is not built: the embedded model is
# text only, and it would add minutes to the build.
COMMON_FLAGS = ["-DGGML_NATIVE=OFF", "-DLLAVA_BUILD=OFF"]
# Run-time CPU dispatch exists for these architectures; elsewhere the generic build is used.
DISPATCH_FLAGS = ["-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"]
DISPATCH_ARCHES = {"x86_64", "amd64", "aarch64", "arm64"}
# What this script does to a wheel after pip builds it (part of the cache key).
REPACK = "cpu-variants-in-llama_cpp/lib"


def pinned_version() -> str:
    """The version ``constraints.txt`` pins (the same pin the project's extra uses)."""
    text = (ROOT / "constraints.txt").read_text()
    found = re.search(r"^llama[-_]cpp[-_]python==(\S+)$", text, re.MULTILINE | re.IGNORECASE)
    if not found:
        raise SystemExit("constraints.txt pins no llama-cpp-python version")
    return found.group(1)


def cmake_flags(machine: str) -> list[str]:
    flags = list(COMMON_FLAGS)
    if machine.lower() in DISPATCH_ARCHES:
        flags += DISPATCH_FLAGS
    return flags


def _compiler() -> str:
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"
    try:
        return subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0]
    except (OSError, IndexError):
        return compiler


def build_key(version: str, flags: list[str], machine: str) -> str:
    """What makes two builds interchangeable: nothing else goes into a wheel."""
    parts = [
        PACKAGE,
        version,
        REPACK,
        " ".join(flags),
        machine,
        sysconfig.get_config_var("SOABI") or sys.implementation.cache_tag or "",
        _compiler(),
    ]
    return f"{version}-{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()[:16]}"


def cache_dir() -> Path:
    base = os.environ.get("LLMP_WHEEL_CACHE") or Path.home() / ".cache" / "llmplatform" / "wheels"
    return Path(base)


def cached_wheel(folder: Path) -> Path | None:
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    return wheels[-1] if wheels else None


def build_wheel(version: str, flags: list[str], folder: Path) -> Path:
    env = dict(os.environ)
    env["CMAKE_ARGS"] = " ".join([env.get("LLMP_EXTRA_CMAKE_ARGS", ""), *flags]).strip()
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    print(
        f"install_local_model: building {PACKAGE} {version} from source with CMAKE_ARGS="
        f"'{env['CMAKE_ARGS']}' (once per machine and flags; several minutes on 2 cores)",
        flush=True,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llama-wheel-") as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-cache-dir",
                "--no-binary",
                PACKAGE,
                "--wheel-dir",
                tmp,
                f"{PACKAGE}=={version}",
            ],
            env=env,
            check=True,
        )
        built = cached_wheel(Path(tmp))
        if built is None:
            raise SystemExit(f"pip wheel made no {PACKAGE} wheel")
        built = relocate_cpu_variants(built, Path(tmp) / "repacked")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / built.name
        partial = folder / f".{built.name}.partial"
        shutil.copyfile(built, partial)
        partial.replace(target)  # never a half-written wheel under the real name
    print(f"install_local_model: built in {time.monotonic() - started:.0f}s: {target}", flush=True)
    return target


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def relocate_cpu_variants(wheel: Path, out_dir: Path) -> Path:
    """Repack ``wheel`` with its ``bin/libggml-cpu-*.so`` moved into ``llama_cpp/lib`` and the
    top-level ``bin/`` and ``lib/`` (duplicates, CMake and pkg-config files) left out."""
    _pip("install", "--quiet", "-c", str(ROOT / "constraints.txt"), "wheel")
    with tempfile.TemporaryDirectory(prefix="llama-repack-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "wheel", "unpack", "--dest", tmp, str(wheel)], check=True
        )
        (root,) = [path for path in Path(tmp).iterdir() if path.is_dir()]
        lib_dir = root / "llama_cpp" / "lib"
        for variant in sorted((root / "bin").glob("libggml-cpu-*.so")):
            variant.replace(lib_dir / variant.name)
        for leftover in ("bin", "lib"):
            shutil.rmtree(root / leftover, ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "wheel", "pack", "--dest-dir", str(out_dir), str(root)],
            check=True,
        )
    (packed,) = out_dir.glob("llama_cpp_python-*.whl")
    return packed


def installed_key() -> str | None:
    try:
        return MARKER.read_text().strip() or None
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="build again, even if cached")
    parser.add_argument("--print-key", action="store_true", help="print the build key and stop")
    args = parser.parse_args(argv)

    version = pinned_version()
    machine = platform.machine()
    flags = cmake_flags(machine)
    key = build_key(version, flags, machine)
    if args.print_key:
        print(key)
        return 0
    folder = cache_dir() / key
    wheel = None if args.rebuild else cached_wheel(folder)
    if wheel is None:
        wheel = build_wheel(version, flags, folder)
    elif installed_key() == key:
        print(f"install_local_model: {PACKAGE} {version} (build {key}) is installed", flush=True)
        return 0
    else:
        print(f"install_local_model: using the cached build {wheel}", flush=True)
    _pip("install", "--no-deps", "--force-reinstall", str(wheel))
    MARKER.write_text(f"{key}\n")
    print(f"install_local_model: installed {PACKAGE} {version} (build {key})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
