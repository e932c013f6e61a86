"""Build (once) and load the C++ direct sparse convolution backward (golden/training/csrc/).

`torch.utils.cpp_extension.load` compiles the four sources with ninja on first use and caches
the result; later loads only check that the sources did not change. The cache directory is
$TORCH_EXTENSIONS_DIR when set, else `build/torch_extensions` in the source tree (what `make
clean` removes), else torch's default under ~/.cache. The kernels are compiled for AVX-512,
AVX2 and plain C++ in one library and chosen at run time from the CPU's flags
(`isa()`, `supported_isas()`, `set_isa()`).

`python -m sparsetrain.golden.training.sparse_conv_ext` builds it and prints the instruction set in use
(`make test` runs that first, so the build is not timed as part of a test).
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from types import ModuleType

SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
SOURCES = ("sparse_conv.cpp", "sparse_conv_avx512.cpp", "sparse_conv_avx2.cpp", "sparse_conv_generic.cpp")
HEADERS = ("sparse_conv_api.h", "sparse_conv_kernel.h")
NAME = "sparsetrain_sparse_conv"
_lock = threading.Lock()
_module: ModuleType | None = None


def build_directory() -> Path:
    """Where the compiled extension is cached (created if missing)."""
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    if env:
        path = Path(env)
    else:
        repo = SOURCE_DIR.parent.parent
        path = repo / "build" / "torch_extensions"
        if not (repo / "pyproject.toml").exists() or not os.access(repo, os.W_OK):
            from torch.utils.cpp_extension import _get_build_directory  # installed copy: torch's default

            return Path(_get_build_directory(NAME, verbose=False))
    path = path / NAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def load(verbose: bool = False) -> ModuleType:
    """The compiled extension module; compiles it first if the cache is missing or stale."""
    global _module
    with _lock:
        if _module is None:
            from torch.utils.cpp_extension import load as cpp_load

            missing = [name for name in SOURCES + HEADERS if not (SOURCE_DIR / name).exists()]
            if missing:
                raise FileNotFoundError(f"{SOURCE_DIR}: missing C++ sources {missing}")
            _put_ninja_on_path()
            # -O3 for the vector loops; -fopenmp so at::parallel_for uses torch's OpenMP threads.
            # The per-ISA files set their own targets with #pragma GCC target.
            _module = cpp_load(name=NAME, sources=[str(SOURCE_DIR / s) for s in SOURCES],
                               extra_cflags=["-O3", "-fopenmp"],
                               extra_ldflags=["-fopenmp"], extra_include_paths=[str(SOURCE_DIR)],
                               build_directory=str(build_directory()), verbose=verbose)
    return _module


def _put_ninja_on_path() -> None:
    """torch runs `ninja` from PATH; the PyPI ninja lives in the venv's bin, which a script
    started as .venv/bin/python does not have on PATH."""
    try:
        import ninja
    except ImportError:
        return  # torch will say that ninja is required
    bin_dir = str(ninja.BIN_DIR)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def main() -> int:
    module = load(verbose="-v" in sys.argv)
    print(f"{NAME}: built in {build_directory()}; instruction set {module.isa()} "
          f"(this CPU supports {', '.join(module.supported_isas())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
