"""GPU check at real size: a Qwen2-0.5B-shaped policy in bf16 through our own SFT, rollout and
PPO code paths (the same functions the jobs call, no special cases).

1. SFT: a freshly initialised Qwen2 of Qwen2.5-0.5B's shape (24 layers, width 896, 14 query and
   2 key/value heads; the vocabulary is our tokenizer's, since no hub is reachable) is trained for
   a few hundred steps on the embedded benchmark → train tokens/s.
2. Rollouts: ``HFSampler`` (ours: left-padded batches, KV cache, stop at dedent) against plain
   ``model.generate`` on the same prompts, length cap and batch → completion tokens/s, ratio.
3. PPO: ``dense+value-init`` iterations (policy, frozen reference, critic from a PRM, frozen PRM,
   all bf16) through the sandbox → time per phase, tokens/s, peak GPU memory.

Prints a table, then one JSON line. Without CUDA it prints ``{"skipped": ...}`` and exits 0.
Usage: python -m bench.gpu [--sft-steps 300] [--ppo-steps 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def qwen2_half_billion(tokenizer):
    """Qwen2.5-0.5B's shape with our tokenizer's vocabulary (random weights)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(config)


def rollout_throughput(policy_dir: Path, prompts: list[str], max_new_tokens: int) -> dict:
    """Completion tokens/s of our sampler and of plain ``generate`` on the same batch."""
    from models.policy import load_policy
    from models.policy_config import SamplingParams
    from models.sampling import HFSampler

    model, tokenizer = load_policy(policy_dir)
    params = SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens, stop_at_dedent=False)
    sampler = HFSampler(model, tokenizer, batch_size=len(prompts))
    sampler.generate(prompts[:4], params)  # warm-up (kernels, allocator)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    ours = sampler.generate(prompts, params)
    torch.cuda.synchronize()
    ours_s = time.perf_counter() - t0
    ours_tokens = sum(len(g.token_ids) for g in ours)

    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=1.0,
            top_k=0,  # generate's default is 50: sample the whole distribution, as ours does
            max_new_tokens=max_new_tokens,
        )
    torch.cuda.synchronize()
    hf_s = time.perf_counter() - t0
    completions = out[:, batch["input_ids"].shape[1] :]
    # real tokens: up to and including the first EOS of each row
    is_eos = completions == tokenizer.eos_token_id
    first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, completions.shape[1])
    hf_tokens = int(first_eos.sum())
    return {
        "batch": len(prompts),
        "max_new_tokens": max_new_tokens,
        "ours_tokens_per_s": round(ours_tokens / ours_s, 1),
        "generate_tokens_per_s": round(hf_tokens / hf_s, 1),
        "ratio": round((ours_tokens / ours_s) / (hf_tokens / hf_s), 3),
        "dtype": str(model.dtype),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--ppo-steps", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        return

    from models.benchmark import BenchmarkConfig, generate
    from models.policy import save_policy
    from models.policy_config import SFTConfig
    from models.ppo import train_ppo
    from models.ppo_config import PPOConfig
    from models.reporting import MemoryReporter
    from models.sft import train_sft
    from models.tokenizer import train_tokenizer
    from models.value_model import ValueModel
    from workers.sandbox import run_batch

    problems = generate(BenchmarkConfig(n_train=2000, n_test=200))
    train = [p for p in problems if p.meta.get("split") == "train"]
    test = [p for p in problems if p.meta.get("split") == "test"]
    root = Path(tempfile.mkdtemp(prefix="prm-gpu-"))
    tokenizer = train_tokenizer([p.prompt + (p.reference or "") for p in train], 2048)
    torch.manual_seed(0)
    model = qwen2_half_billion(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    save_policy(model, tokenizer, root / "init")
    del model
    print(f"{torch.cuda.get_device_name()}: Qwen2 shape, {n_params / 1e6:.0f}M parameters")

    # ---- 1. SFT (bf16) ----
    t0 = time.perf_counter()
    sft = train_sft(
        SFTConfig(
            init_from=str(root / "init"),
            steps=args.sft_steps,
            batch_size=32,
            lr=3e-4,
            warmup_steps=20,
            eval_every=0,
            final_eval=True,
            eval_subset=64,
            checkpoint_every=0,
        ),
        train,
        test,
        MemoryReporter(),
        run_batch,
        out_dir=root / "sft",
    )
    sft_summary = sft.summary()
    print(f"SFT {args.sft_steps} steps in {time.perf_counter() - t0:.0f}s: {sft_summary}")

    # ---- 2. rollouts: ours vs plain generate ----
    prompts = [p.prompt for p in test[:128]]
    rollouts = rollout_throughput(Path(sft.checkpoint), prompts, args.max_new_tokens)
    print(f"rollouts: {rollouts}")

    # ---- 3. PPO dense+value-init (PRM: the SFT backbone with a fresh head) ----
    ValueModel.from_policy(sft.checkpoint, seed=1).save(root / "prm", tokenizer)
    reporter = MemoryReporter()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    train_ppo(
        PPOConfig(
            variant="dense+value-init",
            steps=args.ppo_steps,
            problems_per_step=32,
            samples_per_problem=4,
            minibatch_size=32,
            max_new_tokens=args.max_new_tokens,
            policy_lr=1e-6,
            critic_lr=5e-6,
            eval_every=0,
            eval_problems=1,
            checkpoint_every=0,
        ),
        policy_dir=sft.checkpoint,
        prm_dir=root / "prm",
        train_problems=train,
        eval_problems=test,
        run_batch=run_batch,
        reporter=reporter,
        out_dir=root / "ppo",
    )
    ppo_s = time.perf_counter() - t0

    def mean(name: str) -> float:
        values = [v for _, v in reporter.series(name)]
        return round(sum(values) / max(len(values), 1), 3)

    phases = sorted({n for _, n, _ in reporter.history if n.startswith("time/")})
    ppo = {name.removeprefix("time/"): mean(name) for name in phases}
    ppo.update(
        steps=args.ppo_steps,
        rollouts_per_step=128,
        wall_s=round(ppo_s, 1),
        peak_gpu_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
        pass_rate=mean("rollout/pass_rate"),
        response_tokens=mean("rollout/response_tokens"),
    )
    print(f"PPO dense+value-init: {ppo}")
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(),
                "params_m": round(n_params / 1e6),
                "sft": sft_summary,
                "rollouts": rollouts,
                "ppo": ppo,
                "ratio": rollouts["ratio"],
            },
            default=str,
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
