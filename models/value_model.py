"""A causal-LM backbone with a scalar head: the PRM *and* the PPO critic are this one class.

The paper's ValueInit starts the critic from the PRM, which only makes sense when both share an
architecture. So there is exactly one: ``ValueModel(backbone, head)``, where the backbone is the
policy's transformer without its LM head (``AutoModel`` loads that from any causal-LM
checkpoint) and the head maps each position's last hidden state to one scalar. ValueInit is then
``ValueModel.load(prm_dir)`` — loading the PRM's weights, nothing more.

Saved as a Hugging Face folder of the backbone (``config.json``, ``model.safetensors``,
tokenizer files) plus ``value_head.safetensors``: the backbone loads in plain transformers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

HEAD_FILE = "value_head.safetensors"


class ValueModel(nn.Module):
    def __init__(self, backbone: PreTrainedModel, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @classmethod
    def from_backbone(cls, backbone: PreTrainedModel, seed: int = 0) -> ValueModel:
        """A fresh head on ``backbone``: small weights and a zero bias, so the first values
        are near 0 — the midpoint of the PRM's {-1, +1} labels and of unit-test returns."""
        generator = torch.Generator().manual_seed(seed)
        hidden = backbone.config.hidden_size
        head = nn.Linear(hidden, 1)
        with torch.no_grad():
            head.weight.copy_(torch.randn(1, hidden, generator=generator) / (hidden**0.5) * 0.1)
            head.bias.zero_()
        head.to(device=backbone.device, dtype=backbone.dtype)
        return cls(backbone, head)

    @classmethod
    def from_policy(
        cls, policy_dir: str | Path, seed: int = 0, dtype: torch.dtype | None = None
    ) -> ValueModel:
        """The policy's transformer (its LM head dropped) plus a fresh head — the Baseline
        critic, and the starting point of PRM training."""
        return cls.from_backbone(AutoModel.from_pretrained(policy_dir, dtype=dtype), seed=seed)

    @classmethod
    def load(cls, folder: str | Path, dtype: torch.dtype | None = None) -> ValueModel:
        """A saved PRM or critic, exactly as saved (ValueInit)."""
        folder = Path(folder)
        if not (folder / HEAD_FILE).is_file():
            raise FileNotFoundError(
                f"{folder} has no {HEAD_FILE}: it is not a PRM/critic checkpoint "
                "(point at a prm-train run's checkpoint folder)"
            )
        backbone = AutoModel.from_pretrained(folder, dtype=dtype)
        state = load_file(folder / HEAD_FILE)
        head = nn.Linear(state["weight"].shape[1], 1)
        head.load_state_dict(state)
        head.to(device=backbone.device, dtype=backbone.dtype)
        return cls(backbone, head)

    @property
    def config(self) -> PretrainedConfig:
        """The backbone's configuration (vocabulary, context length)."""
        return self.backbone.config

    def save(self, folder: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(folder, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        head_state = {
            k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()
        }
        save_file(head_state, folder / HEAD_FILE)
        return folder

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, with_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """One value per position. ``input_ids``, ``attention_mask``: (B, T) → (B, T); with
        ``with_hidden`` also the last hidden states (B, T, H) the values are read from.

        With left padding, position ids must skip the pads so a prompt's first real token sits
        at position 0 whatever the padding — the same positions the policy saw."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state  # (B, T, H)
        values = self.head(hidden).squeeze(-1)  # (B, T)
        return (values, hidden) if with_hidden else values
