"""Policy models: load any causal LM + tokenizer, build the tiny default, save checkpoints.

Every checkpoint is a plain Hugging Face folder (``config.json``, ``model.safetensors``,
tokenizer files) that ``AutoModelForCausalLM.from_pretrained`` loads with nothing of ours
installed. LoRA (through the optional ``peft`` package) is for models too large to fine-tune in
full; a LoRA policy is saved with its adapters merged, so the rule above still holds.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from models.policy_config import LoraSettings, TinyModelConfig

# "org/name" or "name": what a hub id may look like (a local path has other characters or exists).
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class PolicyLoadError(ValueError):
    """A model that cannot be loaded; the message names the path and what to do about it."""

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        super().__init__(f"cannot load a policy from {str(path)!r}: {problem}. Fix: {fix}")
        self.path = str(path)


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: the first CUDA GPU if there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    """``auto``: bf16 on GPUs that support it (half the memory, no loss scaling), else fp32
    (CPU bf16 matmuls are slow on most machines and fp16 training needs a grad scaler).

    ``auto`` is for models that are only run (samplers, frozen PRMs). A model that is trained
    loads in ``float32`` and runs under ``autocast_for``: AdamW's updates at fine-tuning learning
    rates (1e-6 × a weight of ~0.02) are far below bf16's resolution (2^-8 relative), so pure
    bf16 weights would round most of them away."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs (matmuls in bf16 from fp32 master weights); nothing on CPUs."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_tiny_policy(
    tokenizer: PreTrainedTokenizerBase, cfg: TinyModelConfig, seed: int
) -> GPT2LMHeadModel:
    """A freshly initialised tiny GPT-2 whose vocabulary is exactly the tokenizer's."""
    torch.manual_seed(seed)  # the initial weights are part of the run's reproducibility
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding (batched generation appends on the right) and a pad token (EOS if none)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _resolve(name_or_path: str | Path) -> str:
    """A local model folder (checked) or a hub id; anything else is a clear error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PolicyLoadError(
                path, "it is a file, not a model folder", "pass the folder that holds config.json"
            )
        if not (path / "config.json").is_file():
            raise PolicyLoadError(
                path,
                "the folder has no config.json, so it is not a Hugging Face model folder",
                "pass a folder written by save_pretrained (e.g. an sft run's checkpoint)",
            )
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            raise PolicyLoadError(
                path,
                "the folder has a model but no tokenizer files",
                "save the tokenizer beside the model (tokenizer.save_pretrained(folder))",
            )
        return str(path)
    if HUB_ID.match(str(name_or_path)):
        return str(name_or_path)
    raise PolicyLoadError(
        path, "no such file or folder", "check the path (it must be a model folder on this host)"
    )


def load_policy(
    name_or_path: str | Path,
    *,
    device: str = "auto",
    dtype: str = "auto",
    lora: LoraSettings | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a local folder (or a hub id where the hub is reachable),
    on ``device`` in ``dtype``, in eval mode, optionally wrapped with LoRA adapters."""
    source = _resolve(name_or_path)
    target = pick_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=pick_dtype(target, dtype))
    except (OSError, ValueError, KeyError) as error:
        where = "" if Path(source).exists() else "there is no such local folder, and as a hub id "
        raise PolicyLoadError(
            source,
            f"{where}transformers could not load it ({type(error).__name__}: {error})",
            "pass a local folder with a causal LM saved by save_pretrained, or a hub id "
            "that is in the local cache (this host may have no network)",
        ) from error
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise PolicyLoadError(
            source,
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {rows} "
            "rows, so the tokenizer does not belong to this model",
            "save the model and its own tokenizer together (models.policy.save_policy)",
        )
    model = model.to(target)
    if lora is not None:
        model = apply_lora(model, lora)
    return model.eval(), prepare_tokenizer(tokenizer)


def apply_lora(model: PreTrainedModel, settings: LoraSettings) -> Any:
    """Wrap ``model`` with trainable low-rank adapters; the base weights are frozen."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ImportError(
            "LoRA needs the optional 'peft' package: pip install 'prm-studio[lora]' "
            "(or pip install peft), or set lora to null to fine-tune all weights"
        ) from error
    targets: str | list[str] = settings.target_modules
    if targets != "all-linear":
        targets = [name.strip() for name in settings.target_modules.split(",") if name.strip()]
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def is_lora(model: Any) -> bool:
    return hasattr(model, "peft_config")


def save_policy(model: Any, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> Path:
    """Write ``model`` (safetensors) and ``tokenizer`` to ``folder`` in Hugging Face format.

    A LoRA model is saved merged — its base weights plus the adapters' update — under the base
    model's parameter names, so plain transformers loads it; the live model keeps its adapters.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if is_lora(model):
        model.merge_adapter()
        try:
            base = model.get_base_model()
            state = {
                name.replace(".base_layer.", "."): tensor
                for name, tensor in base.state_dict().items()
                if "lora_" not in name
            }
            base.save_pretrained(folder, state_dict=state)
        finally:
            model.unmerge_adapter()
    else:
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
