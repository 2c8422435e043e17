"""Preference tuning: teach a language model to write what a reward model prefers (chapter 14).

The pieces, in the chapter's order:

1. **prompts**: the first characters of real reviews, from the fit split only (`review_prompts`);
2. **rollouts**: continuations sampled from the policy (`rollout`), with the log-probabilities of
   their tokens under the policy and under a frozen reference copy (`token_logprobs`);
3. **the reward**: a frozen classifier's probability of "positive" (`classifier_reward`);
4. **RLHF**: REINFORCE on the reward minus a KL penalty, with a leave-one-out baseline
   (`kl_penalized`, `leave_one_out`, `reinforce_loss`);
5. **DPO**: pairs of the policy's own samples ranked by the reward model (`preference_pairs`,
   `dpo_loss`);
6. `tune`: the loop both methods share, with the same budget (steps of the same batch size);
7. what the tuned text is like: `token_kl` (exact, per token), `distinct_n`, `repetition_rate`,
   `evaluate_policy`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .finetune import wilson_interval
from .sampling import generate
from .vocab import PAD, SEP, Vocab

METHODS = ("rlhf", "dpo")


# ---------------------------------------------------------------------------- prompts


def review_prompts(fit_texts: Sequence[str], n_chars: int = 4, n_heldout: int = 256, seed: int = 0):
    """(training prompts, held-out prompts): the first `n_chars` characters of the reviews given,
    each distinct opening once, split at random. Pass the *fit* reviews only: the classifier's
    validation and test reviews stay unseen. No held-out prompt is a training prompt."""
    if n_chars < 1:
        raise ValueError(f"n_chars must be at least 1, got {n_chars}")
    openings = sorted({t[:n_chars] for t in fit_texts if len(t) > n_chars})
    if len(openings) <= n_heldout:
        raise ValueError(f"only {len(openings)} distinct openings of {n_chars} characters: "
                         f"fewer than n_heldout={n_heldout} + 1; pass more reviews or hold out fewer")
    order = np.random.default_rng(seed).permutation(len(openings))
    heldout = [openings[i] for i in order[:n_heldout]]
    return [openings[i] for i in order[n_heldout:]], heldout


# ---------------------------------------------------------------------------- rollouts


@dataclass
class Rollout:
    """Sampled continuations. `ids` (B, P + N): the prompt, then the new tokens up to and with
    the first `<sep>`, `<pad>` after it; `mask` (B, N): 1 where a token was generated."""
    ids: torch.Tensor
    prompt_len: int

    @property
    def mask(self) -> torch.Tensor:
        new = self.ids[:, self.prompt_len:]
        is_sep = (new == SEP).int()
        before_stop = (is_sep.cumsum(1) - is_sep) == 0      # up to and with the first <sep>
        return before_stop.float()


@torch.no_grad()
def rollout(policy, prompts: torch.Tensor, max_new_tokens: int, vocab: Vocab, temperature: float = 1.0,
            generator: torch.Generator | None = None) -> Rollout:
    """Sample one continuation per row of `prompts` (B, P): pure sampling at `temperature`
    (no top-k, no top-p, so the log-probabilities below are those of the sampling distribution),
    stopping each row at `<sep>`, the end of a review."""
    ids = generate(policy, prompts, max_new_tokens, temperature=temperature,
                   stop_tokens=[SEP], generator=generator)
    return Rollout(ids, prompts.size(1))


def token_logprobs(model, ids: torch.Tensor, prompt_len: int, mask: torch.Tensor) -> torch.Tensor:
    """(B, N): log p(token t | the tokens before it) for each generated token (`mask` 1), else 0.
    Differentiable: with gradients on, this is what the policy's loss backpropagates through."""
    logits = model(ids[:, :-1])[0][:, prompt_len - 1:].float()
    new = ids[:, prompt_len:]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
    return logp * mask


@torch.no_grad()
def token_kl(policy, reference, ids: torch.Tensor, prompt_len: int, mask: torch.Tensor) -> torch.Tensor:
    """(B, N): the exact KL(policy || reference) of the next-token distributions at each generated
    position (`mask` 1; a sum over the whole vocabulary), else 0."""
    logp = torch.log_softmax(policy(ids[:, :-1])[0][:, prompt_len - 1:].float(), dim=-1)
    logq = torch.log_softmax(reference(ids[:, :-1])[0][:, prompt_len - 1:].float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1) * mask


# ---------------------------------------------------------------------------- the reward


@torch.no_grad()
def classifier_reward(classifier, ids: torch.Tensor, vocab: Vocab) -> torch.Tensor:
    """(B,): the classifier's probability of "positive" for each row (prompt + continuation).
    `<sep>` is dropped (the classifier read reviews without it); it reads the first
    `block_size` tokens, as in chapter 10."""
    text = ids.masked_fill(ids == SEP, PAD)[:, :classifier.config.block_size]
    return torch.softmax(classifier(text)[0].float(), dim=-1)[:, 1]


# ---------------------------------------------------------------------------- RLHF


def kl_penalized(reward: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor,
                 kl_coef: float) -> torch.Tensor:
    """(B,): reward - kl_coef * sum_t (log pi - log pi_ref), InstructGPT's objective per sample.
    The sum is the sampled estimate of the sequence's KL to the reference: its mean over samples
    drawn from the policy is the exact KL."""
    return reward - kl_coef * (logp - ref_logp).sum(-1)


def leave_one_out(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) advantages: each score minus the mean of the other k - 1 samples of its prompt (rows
    are grouped k at a time). The baseline does not depend on the sample itself, so it lowers the
    variance of the gradient without biasing it."""
    if k < 2 or scores.numel() % k:
        raise ValueError(f"need k >= 2 samples per prompt and a batch divisible by k; got {scores.numel()} rows, k={k}")
    g = scores.view(-1, k)
    return (g - (g.sum(1, keepdim=True) - g) / (k - 1)).view(-1)


def reinforce_loss(logp: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-mean_i A_i * log pi(continuation_i): its gradient raises the probability of the
    continuations that did better than their baseline and lowers the others'."""
    return -(advantages.detach() * logp.sum(-1)).mean()


# ---------------------------------------------------------------------------- DPO


def preference_pairs(reward: torch.Tensor, k: int, min_margin: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rows, rejected rows): in each group of k samples of one prompt, the one the reward
    model likes best against the one it likes least, where they differ by more than `min_margin`."""
    g = reward.view(-1, k)
    best, worst = g.argmax(1), g.argmin(1)
    keep = (g.max(1).values - g.min(1).values) > min_margin
    base = torch.arange(g.size(0), device=reward.device) * k
    return (base + best)[keep], (base + worst)[keep]


def dpo_loss(logp_chosen: torch.Tensor, logp_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict]:
    """The DPO loss -log sigmoid(beta * [(log pi_c - log ref_c) - (log pi_r - log ref_r)]), the
    sequences' log-probabilities summed over tokens. Returns (loss, stats): the implicit rewards
    beta * (log pi - log ref) of chosen and rejected, and how often chosen's is the higher."""
    chosen, rejected = beta * (logp_chosen - ref_chosen), beta * (logp_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen - rejected).mean()
    chosen, rejected = chosen.detach(), rejected.detach()
    stats = {"reward_chosen": float(chosen.mean()), "reward_rejected": float(rejected.mean()),
             "pair_accuracy": float((chosen > rejected).float().mean())}
    return loss, stats


# ---------------------------------------------------------------------------- the loop


@dataclass
class TuneConfig:
    """One preference-tuning run. Both methods sample `prompts_per_step` prompts, k samples each,
    call the reward model once per step and take one optimizer step: `steps` of them cost both
    methods about the same seconds. `seconds` (optional) stops a run earlier on a slow machine."""
    method: str = "rlhf"              # "rlhf" (REINFORCE, leave-one-out, KL penalty) or "dpo"
    lr: float = 1e-4
    kl_coef: float = 0.05             # RLHF: the price of one nat of KL to the reference
    beta: float = 0.1                 # DPO: how far from the reference the implicit reward may pull
    prompts_per_step: int = 16
    samples_per_prompt: int = 4       # k: the leave-one-out group, or the pool a DPO pair is drawn from
    max_new_tokens: int = 24
    temperature: float = 1.0
    steps: int = 300
    seconds: float | None = None
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.samples_per_prompt < 2:
            raise ValueError("samples_per_prompt must be at least 2 (a baseline, or a pair)")
        if self.steps < 1 or self.lr <= 0 or (self.seconds is not None and self.seconds <= 0):
            raise ValueError("steps must be at least 1, lr and seconds (if given) positive")


def tune(policy, reference, reward_fn: Callable[[torch.Tensor], torch.Tensor], prompts: torch.Tensor,
         vocab: Vocab, cfg: TuneConfig, progress: bool = True) -> dict:
    """Tune `policy` in place toward `reward_fn` (rows of ids -> rewards in [0, 1]), drawing
    prompts from the rows of `prompts` (n, P). `reference` stays frozen. Returns the history:
    per step the seconds so far, the mean reward, the sampled KL per token and the loss."""
    for p in reference.parameters():
        p.requires_grad_(False)
    reference.eval()
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    k, history = cfg.samples_per_prompt, {"step": [], "seconds": [], "reward": [], "kl": [], "loss": []}
    bar = tqdm(total=cfg.steps, desc=cfg.method.upper(), unit="step", disable=not progress)
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        pick = torch.randint(len(prompts), (cfg.prompts_per_step,), generator=gen)
        batch = rollout(policy, prompts[pick].repeat_interleave(k, 0), cfg.max_new_tokens, vocab,
                        cfg.temperature, gen)
        reward = reward_fn(batch.ids)
        with torch.no_grad():
            ref_logp = token_logprobs(reference, batch.ids, batch.prompt_len, batch.mask)
        policy.train()
        logp = token_logprobs(policy, batch.ids, batch.prompt_len, batch.mask)
        if cfg.method == "rlhf":
            loss = reinforce_loss(logp, leave_one_out(kl_penalized(reward, logp.detach(), ref_logp, cfg.kl_coef), k))
        else:
            chosen, rejected = preference_pairs(reward, k)
            lp, rp = logp.sum(-1), ref_logp.sum(-1)
            loss, _ = dpo_loss(lp[chosen], lp[rejected], rp[chosen], rp[rejected], cfg.beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        opt.step()
        policy.eval()
        elapsed = time.perf_counter() - t0
        kl = float((logp.detach() - ref_logp).sum() / batch.mask.sum().clamp(min=1))
        for key, value in zip(history, (step, elapsed, float(reward.mean()), kl, float(loss.detach())), strict=True):
            history[key].append(value)
        bar.update(1)
        bar.set_postfix(reward=f"{float(reward.mean()):.3f}", kl=f"{kl:.3f}")
        if cfg.seconds is not None and elapsed >= cfg.seconds:
            break
    bar.close()
    return history


# ---------------------------------------------------------------------------- what the text is like


def continuation_texts(vocab: Vocab, batch: Rollout) -> list[str]:
    """The generated characters of each row, up to its `<sep>`."""
    out = []
    for row in batch.ids[:, batch.prompt_len:].tolist():
        row = row[:row.index(SEP)] if SEP in row else row
        out.append("".join(vocab.idx2token[i] for i in row if i != PAD))
    return out


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct character n-grams over all n-grams in `texts` (1.0: nothing repeats)."""
    grams = [t[i:i + n] for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: Sequence[str], n: int = 3) -> float:
    """The share of character n-grams that already occurred earlier in the same text."""
    seen_again = total = 0
    for t in texts:
        seen = set()
        for i in range(len(t) - n + 1):
            seen_again += t[i:i + n] in seen
            seen.add(t[i:i + n])
            total += 1
    return seen_again / total if total else 0.0


def evaluate_policy(policy, reference, reward_fn: Callable, judge_fn: Callable[[list[str]], np.ndarray],
                    prompts: Sequence[str], vocab: Vocab, max_new_tokens: int = 24,
                    temperature: float = 1.0, seed: int = 0) -> dict:
    """One sampled continuation per held-out prompt (the same seed for every policy), measured:
    the reward model's mean reward and share positive (with Wilson's interval), the independent
    judge's share positive, the exact KL to the reference per generated token, distinct-1 and -2,
    the repetition rate and the mean length. Keeps the texts and the per-prompt verdicts."""
    ids = torch.tensor([vocab.encode(p) for p in prompts])
    batch = rollout(policy, ids, max_new_tokens, vocab, temperature, torch.Generator().manual_seed(seed))
    reward = reward_fn(batch.ids).numpy()
    texts = continuation_texts(vocab, batch)
    full = [p + t for p, t in zip(prompts, texts, strict=True)]
    judged = np.asarray(judge_fn(full)).astype(bool)
    kl = token_kl(policy, reference, batch.ids, batch.prompt_len, batch.mask)
    positive = reward > 0.5
    return {"mean reward": float(reward.mean()), "positive (reward model)": float(positive.mean()),
            "positive interval": wilson_interval(int(positive.sum()), len(positive)),
            "positive (judge)": float(judged.mean()),
            "judge interval": wilson_interval(int(judged.sum()), len(judged)),
            "KL per token": float(kl.sum() / batch.mask.sum()),
            "distinct-1": distinct_n(texts, 1), "distinct-2": distinct_n(texts, 2),
            "repetition": repetition_rate(texts), "length": float(batch.mask.sum(1).mean()),
            "texts": full, "reward_positive": positive, "judge_positive": judged}
