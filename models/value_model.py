"""A causal-LM backbone with a scalar head: the PRM *and* the PPO critic are this one class.

The paper's ValueInit starts the critic from the PRM, which only makes sense when both share an
architecture. So there is exactly one: ``ValueModel(backbone, head)``, where the backbone is the
policy's transformer without its LM head (``AutoModel`` loads that from any causal-LM
checkpoint) and the head maps each position's last hidden state to one scalar. ValueInit is then
``ValueModel.load(prm_dir)`` — loading the PRM's weights, nothing more.

Saved as a Hugging Face folder of the backbone (``config.json``, ``model.safetensors``,
tokenizer files) plus ``value_head.safetensors``: the backbone loads in plain transformers.

A value model may also read the **policy's likelihood of the response** (``PolicyLikelihood``,
ours): a frozen copy of the policy it started from, saved in ``likelihood_policy/``, whose
log-probability of the response's tokens enters the value through one learnt weight. The head
alone has to relearn, from line labels, how to check a line against its prompt; the policy
already does that when it predicts the line's tokens (README, "The policy's likelihood as an
input").
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

HEAD_FILE = "value_head.safetensors"
LIKELIHOOD_DIR = "likelihood_policy"  # the frozen policy of a PolicyLikelihood
LIKELIHOOD_KEY = "likelihood_weight"  # its weight, stored beside the head's in HEAD_FILE
LIKELIHOOD_SCALE = 10.0  # Adam moves a parameter about lr per step; the weight needs ~10 × that


class PolicyLikelihood(nn.Module):
    """The value's likelihood input: ``w · m_t``, where m_t is the lowest log-probability the
    frozen policy π₀ gives any response token up to t,

        m_t = min over response tokens s ≤ t of log π₀(x_s | x_<s)     (0 before the response)

    A running minimum because a response is as wrong as its least likely token: a number
    copied to the wrong step is one surprising token among many likely ones, and once a line
    is wrong every later prefix is too — the shape of the PRM's labels. w is learnt (it starts
    at 0: the value starts as the head's alone); π₀ never trains."""

    def __init__(self, policy: PreTrainedModel, weight: float = 0.0) -> None:
        super().__init__()
        self.policy = policy.eval().requires_grad_(False)
        self.weight = nn.Parameter(torch.tensor(weight / LIKELIHOOD_SCALE))

    def learnt(self) -> float:
        """w, the weight the value gives the least likely token's log-probability."""
        return LIKELIHOOD_SCALE * float(self.weight.detach())

    def train(self, mode: bool = True) -> PolicyLikelihood:
        super().train(mode)
        self.policy.eval()  # frozen: no dropout whatever the value model's mode
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        response_start: torch.Tensor,
    ) -> torch.Tensor:
        """(B, T) ids, mask and positions, and each row's first response token (B,) → w · m,
        (B, T)."""
        with torch.no_grad():
            logits = self.policy(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
            ).logits[:, :-1]  # (B, T−1, V): position t predicts token t + 1
            logp = torch.log_softmax(logits.float(), dim=-1)
            logp = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, T−1)
            logp = F.pad(logp, (1, 0))  # (B, T): log π₀(x_t | x_<t); the first token has none
            columns = torch.arange(input_ids.shape[1], device=input_ids.device)
            in_response = (columns >= response_start[:, None]) & attention_mask.bool()
            least_likely = torch.cummin(logp.where(in_response, 0.0), dim=-1).values
        return LIKELIHOOD_SCALE * self.weight * least_likely


class ValueModel(nn.Module):
    def __init__(
        self,
        backbone: PreTrainedModel,
        head: nn.Linear,
        likelihood: PolicyLikelihood | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.likelihood = likelihood

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
        cls,
        policy_dir: str | Path,
        seed: int = 0,
        dtype: torch.dtype | None = None,
        *,
        likelihood: bool = False,
    ) -> ValueModel:
        """The policy's transformer (its LM head dropped) plus a fresh head — the Baseline
        critic, and the starting point of PRM training; ``likelihood``: plus the policy's
        likelihood input, a frozen copy of the whole policy."""
        model = cls.from_backbone(AutoModel.from_pretrained(policy_dir, dtype=dtype), seed=seed)
        if likelihood:
            policy = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=dtype)
            model.likelihood = PolicyLikelihood(policy.to(model.head.weight.device))
        return model

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
        likelihood_weight = state.pop(LIKELIHOOD_KEY, None)
        head = nn.Linear(state["weight"].shape[1], 1)
        head.load_state_dict(state)
        head.to(device=backbone.device, dtype=backbone.dtype)
        likelihood = None
        if likelihood_weight is not None:
            policy = AutoModelForCausalLM.from_pretrained(folder / LIKELIHOOD_DIR, dtype=dtype)
            likelihood = PolicyLikelihood(policy, float(likelihood_weight) * LIKELIHOOD_SCALE)
        return cls(backbone, head, likelihood)

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
        head_state = dict(self.head.state_dict())
        if self.likelihood is not None:
            self.likelihood.policy.save_pretrained(folder / LIKELIHOOD_DIR, safe_serialization=True)
            head_state[LIKELIHOOD_KEY] = self.likelihood.weight
        save_file(
            {k: v.detach().float().cpu().contiguous() for k, v in head_state.items()},
            folder / HEAD_FILE,
        )
        return folder

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_start: torch.Tensor | None = None,
        with_hidden: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """One value per position. ``input_ids``, ``attention_mask``: (B, T) → (B, T); with
        ``with_hidden`` also the last hidden states (B, T, H) the values are read from.
        ``response_start`` (B,): each row's first response token, which a model with the
        policy's likelihood input needs (the prompt's own tokens are not the response's).

        With left padding, position ids must skip the pads so a prompt's first real token sits
        at position 0 whatever the padding — the same positions the policy saw."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state  # (B, T, H)
        values = self.head(hidden).squeeze(-1)  # (B, T)
        if self.likelihood is not None:
            if response_start is None:
                raise ValueError(
                    "this value model reads the policy's likelihood of the response: pass "
                    "response_start, each row's first response token"
                )
            values = values + self.likelihood(
                input_ids, attention_mask, position_ids, response_start
            ).to(values.dtype)
        return (values, hidden) if with_hidden else values
