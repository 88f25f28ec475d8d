"""Loading and saving policies: round trips in plain transformers, and one clear error for each
way a path can be wrong."""

from __future__ import annotations

import builtins
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from models.policy import (
    LoraSettings,
    PolicyLoadError,
    TinyModelConfig,
    apply_lora,
    build_tiny_policy,
    count_parameters,
    load_policy,
    pick_device,
    pick_dtype,
    save_policy,
)
from models.tokenizer import train_tokenizer

TEXT = ["def f(xs):\n    ys = [x + 1 for x in xs]\n    return ys\n"] * 10
IDS = torch.tensor([[3, 14, 15, 92, 65]])


@pytest.fixture(scope="module")
def tiny():
    tokenizer = train_tokenizer(TEXT, 300)
    return build_tiny_policy(tokenizer, TinyModelConfig(), seed=0).eval(), tokenizer


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def test_the_tiny_default_has_about_two_million_parameters(tiny):
    model, tokenizer = tiny
    assert model.config.vocab_size == len(tokenizer)
    assert 1_500_000 < count_parameters(model) < 2_500_000


def test_save_and_load_round_trip_in_plain_transformers(tiny, tmp_path):
    model, tokenizer = tiny
    folder = save_policy(model, tokenizer, tmp_path / "ckpt")
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    plain_tokenizer = AutoTokenizer.from_pretrained(folder)
    assert plain_tokenizer.encode(TEXT[0]) == tokenizer.encode(TEXT[0])
    torch.testing.assert_close(logits(plain), logits(model))

    loaded, loaded_tokenizer = load_policy(folder)
    assert not loaded.training and loaded_tokenizer.padding_side == "left"
    assert loaded_tokenizer.pad_token_id is not None
    assert next(loaded.parameters()).dtype == torch.float32  # CPU: fp32
    torch.testing.assert_close(logits(loaded), logits(model))


def test_device_and_dtype_defaults():
    cpu = torch.device("cpu")
    assert pick_dtype(cpu) == torch.float32
    assert pick_dtype(cpu, "bfloat16") == torch.bfloat16
    assert pick_device("cpu") == cpu
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_bad_paths_give_one_clear_error(tiny, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(PolicyLoadError, match=r"no such file or folder\. Fix: check the path"):
        load_policy(tmp_path / "missing")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(PolicyLoadError, match="is a file, not a model folder"):
        load_policy(tmp_path / "file.bin")
    with pytest.raises(PolicyLoadError, match=r"no config\.json") as error:
        load_policy(tmp_path)
    assert str(tmp_path) in str(error.value)

    model_only = tmp_path / "model_only"
    model.save_pretrained(model_only)
    with pytest.raises(PolicyLoadError, match="no tokenizer files"):
        load_policy(model_only)

    broken = tmp_path / "broken"
    save_policy(model, tokenizer, broken)
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(PolicyLoadError, match="transformers could not load it"):
        load_policy(broken)


def test_a_tokenizer_that_does_not_match_the_model_is_refused(tiny, tmp_path):
    model, _ = tiny
    bigger = train_tokenizer([*TEXT, "class Other:\n    pass  # é 中 ✓\n"] * 5, 400)
    assert len(bigger) > model.config.vocab_size
    save_policy(model, bigger, tmp_path / "mismatch")
    with pytest.raises(PolicyLoadError, match=r"tokenizer has \d+ tokens but the model"):
        load_policy(tmp_path / "mismatch")


def test_lora_without_peft_says_how_to_install_it(tiny, monkeypatch):
    real_import = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft" or name.startswith("peft."):
            raise ImportError("No module named 'peft'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(ImportError, match="optional 'peft' package"):
        apply_lora(tiny[0], LoraSettings())


def test_a_lora_policy_saves_merged_and_loads_in_plain_transformers(tmp_path):
    pytest.importorskip("peft", reason="the optional peft package is not installed")
    tokenizer = train_tokenizer(TEXT, 300)
    base = build_tiny_policy(tokenizer, TinyModelConfig(n_layer=2, n_embd=64), seed=0)
    model = apply_lora(base, LoraSettings(r=4, alpha=8, dropout=0.0)).eval()
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    with torch.no_grad():  # a non-zero update, as training would leave
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.05)
    expected = logits(model)
    folder = save_policy(model, tokenizer, tmp_path / "lora")
    torch.testing.assert_close(logits(model), expected)  # the live model keeps its adapters
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    torch.testing.assert_close(logits(plain), expected, atol=1e-5, rtol=1e-4)
