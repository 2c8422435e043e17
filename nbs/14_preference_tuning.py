# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 14 · Preference tuning: RLHF and DPO with your own reward model
#
# The course's source material tells how ChatGPT was made, in three steps: **supervised
# fine-tuning** (show the model good answers, as chapter 11 did with conversations), a **reward
# model** (a network that scores an answer the way people would), and **reinforcement learning
# from human feedback** (RLHF: let the model write, score what it wrote, and make the better
# answers more likely, without drifting far from the model it started as). **DPO** (direct
# preference optimisation) later showed that the last step can be a plain loss on pairs of
# answers, one preferred over the other, with no reinforcement learning at all.
#
# This book already holds every piece, trained by you. Chapter 10's review-adapted GPT writes
# product reviews: it is the **policy**. Chapter 10's sentiment classifier tells positive reviews
# from negative ones: it is the **reward model**. Steering the first with the second toward
# *positive* reviews is the best-known RLHF demonstration (trl's GPT-2 on IMDB), and it joins the
# course's two tasks in one chapter. We run RLHF and DPO on the same prompts with the same budget,
# check the result with a second judge the policy never saw, and then break it on purpose.
#
# **Learning goals**
# - say what a policy, a reward model and a reference model are, and why the reference is there;
# - derive the REINFORCE gradient with a leave-one-out baseline and a KL penalty, and the DPO loss;
# - read a preference-tuning run by its reward, its KL to the reference and its diversity;
# - recognise reward hacking: a reward that rises while the text gets worse.
#
# ![RLHF and DPO: one prompt, four samples, two ways to learn from them](../book/images/preference.png)

# %%
import copy
import time

import numpy as np
import pandas as pd
import torch

from course_utils import artifacts, config, finetune, plots, timing
from course_utils import preference as pref

profile = config.get_profile()
config.seed_everything(0)
plots.setup()
print(config.summary(profile))
print(timing.machine_line())

# %% [markdown]
# ## 1. The policy and the reward model
#
# Both come from chapter 10's artifact cache (built there, or here on first use): the GPT adapted
# to review text, and the classifier fine-tuned from it on every fit review (the row "adapted GPT,
# all layers" of chapter 10's table). The reward of a text is the classifier's probability that
# it is positive: a number between 0 and 1.

# %%
policy_start, vocab, adapt = artifacts.review_lm(profile)
reward_model, _, clf_info = artifacts.review_classifier(profile)
reward_model.requires_grad_(False)
fit_df, _, _ = artifacts.sentiment_splits(profile, vocab)


def reward_fn(ids):
    return pref.classifier_reward(reward_model, ids, vocab)


print(f"policy: {policy_start.num_parameters():,} parameters, validation loss on reviews "
      f"{adapt['after']['reviews']:.3f} nats/char")
print(f"reward model: {sum(p.numel() for p in reward_model.parameters()):,} parameters, "
      f"test accuracy {clf_info['test_accuracy']:.2%} (chapter 10)")

# %% [markdown]
# **What does it reward?** A reward model is only as good as what it learned to like. Scoring
# the 3,000 most frequent two- and three-character strings of the fit reviews, each alone, shows
# the words it pays most for, and those it punishes:

# %%
from collections import Counter

from course_utils.vocab import PAD

counts = Counter(t[i:i + n] for t in fit_df.text for n in (2, 3) for i in range(len(t) - n + 1))
grams = [g for g, _ in counts.most_common(4000) if not set(g) & set("，。！？、,.!? 　")][:3000]
ids = torch.tensor([vocab.encode(g) + [PAD] * (3 - len(g)) for g in grams])
gram_reward = reward_fn(ids).numpy()
order = np.argsort(gram_reward)
print("most positive:", " ".join(f"{grams[i]} {gram_reward[i]:.2f}" for i in order[::-1][:12]))
print("most negative:", " ".join(f"{grams[i]} {gram_reward[i]:.2f}" for i in order[:12]))

# %% [markdown]
# ## 2. Prompts, and a judge the policy never sees
#
# A prompt is the opening of a real review, its first four characters (`这本书很`, `酒店的位`),
# often neutral, sometimes not. `pref.review_prompts` takes the **fit** reviews only (the
# classifier's validation and test reviews stay unseen: the tests check it), keeps each distinct
# opening once and holds some out: we tune on the rest and measure on those.
#
# Measuring with the reward model we optimise against would be marking our own homework. The
# **independent judge** is chapter 10's strongest baseline, TF-IDF over character n-grams with
# logistic regression, trained on the same fit reviews and never optimised against: if the tuned
# text is really more positive, it should say so too.

# %%
train_prompts, heldout = pref.review_prompts(fit_df.text.tolist(), n_chars=4, n_heldout=400)
prompt_ids = torch.tensor([vocab.encode(p) for p in train_prompts])
print(f"{len(train_prompts):,} training prompts, {len(heldout)} held out, e.g.", " ".join(heldout[:8]))

judge = finetune.tfidf_logreg().fit(fit_df.text, fit_df.label)


def judge_fn(texts):
    return judge.predict(texts) == 1


_, _, test_df = artifacts.sentiment_splits(profile, vocab)
print(f"the judge's test accuracy: {(judge.predict(test_df.text) == test_df.label).mean():.2%}")

# %% [markdown]
# ## 3. The untuned policy
#
# `pref.evaluate_policy` samples one continuation of up to 24 tokens for each held-out prompt
# (temperature 1, as in training; the same seed for every policy we compare) and measures it: the
# reward model's mean reward and share positive, the judge's share positive, the KL to the
# reference per token (0 here: the policy *is* the reference), and how varied the text is:
# **distinct-n** (distinct character n-grams over all n-grams of all continuations) and the
# **repetition rate** (n-grams that already occurred earlier in the same continuation).

# %%
reference = copy.deepcopy(policy_start).requires_grad_(False)
MEASURES = ["mean reward", "positive (reward model)", "positive (judge)", "KL per token",
            "distinct-1", "distinct-2", "repetition", "length"]
results = {"untuned": pref.evaluate_policy(policy_start, reference, reward_fn, judge_fn, heldout, vocab)}


def table(rows):
    return pd.DataFrame({name: {m: r[m] for m in MEASURES + [c for c in ("steps", "seconds") if c in r]}
                         for name, r in rows.items()}).T.round(3)


print(table(results).to_string())
for text in results["untuned"]["texts"][:4]:
    print("  ", text)
u = results["untuned"]
config.claim(f"fewer than half of the untuned continuations are positive, by the reward model "
             f"({u['positive (reward model)']:.1%}) and by the judge ({u['positive (judge)']:.1%})",
             max(u["positive (reward model)"], u["positive (judge)"]) < 0.5)

# %% [markdown]
# The policy writes like the reviews it read, which are about half positive; from openings like
# these, a little less often. The reward model and the judge roughly agree on how often.
#
# ## 4. Rollouts and log-probabilities
#
# One step of either method starts the same way: draw a few prompts, sample $k = 4$
# continuations of each from the policy (a **rollout**), score them with the reward model, and
# compute each generated token's log-probability under the policy ($\log \pi_\theta$) and under
# the frozen **reference** ($\log \pi_{\text{ref}}$, the policy before tuning). Here by hand for
# one prompt:

# %%
gen = torch.Generator().manual_seed(0)
one = prompt_ids[:1].repeat(4, 1)
batch = pref.rollout(policy_start, one, 24, vocab, generator=gen)
logp = pref.token_logprobs(policy_start, batch.ids, batch.prompt_len, batch.mask)
ref_logp = pref.token_logprobs(reference, batch.ids, batch.prompt_len, batch.mask)
rewards = reward_fn(batch.ids)
texts = pref.continuation_texts(vocab, batch)
for text, r, lp, n in zip(texts, rewards, logp.detach().sum(1), batch.mask.sum(1), strict=True):
    print(f"reward {r:.3f}  log pi {lp:7.2f} over {int(n):2d} tokens  {train_prompts[0]}|{text}")
print("log pi - log pi_ref (the policy is still the reference):", float((logp.detach() - ref_logp).abs().max()))

# %% [markdown]
# ## 5. RLHF: REINFORCE with a KL penalty
#
# RLHF maximises the expected reward while staying close to the reference:
#
# $$J(\theta) = \mathbb{E}_{x,\, y \sim \pi_\theta}\big[r(x, y)\big] - \beta\,
# \mathrm{KL}\big(\pi_\theta(\cdot \mid x) \,\|\, \pi_{\text{ref}}(\cdot \mid x)\big).$$
#
# Without the KL term nothing stops the policy from finding *any* text the reward model loves,
# however unlike a review (section 8 shows what happens). InstructGPT folds the penalty into the
# reward of each sample: $s = r - \beta \sum_t (\log \pi_\theta - \log \pi_{\text{ref}})$, whose
# mean over samples from the policy is exactly the KL term. The **REINFORCE** gradient (the
# log-derivative trick, $\nabla \mathbb{E}[s] = \mathbb{E}[s \, \nabla \log \pi_\theta(y)]$) then
# needs only samples and their log-probabilities. Its variance is large; subtracting a
# **baseline** that does not depend on the sample keeps it unbiased and cuts the noise. With $k$
# samples per prompt, the **leave-one-out** baseline of a sample is the mean score of the other
# $k - 1$ (RLOO), so the advantage is $A_i = s_i - \frac{1}{k-1}\sum_{j \ne i} s_j$ and the loss is
# $-\frac{1}{B}\sum_i A_i \log \pi_\theta(y_i)$. By hand, checked against `course_utils.preference`:

# %%
KL_COEF = 0.03
scores = rewards - KL_COEF * (logp - ref_logp).sum(1)
advantages = scores - (scores.sum() - scores) / 3
loss = -(advantages * logp.sum(1)).mean()
assert torch.allclose(advantages, pref.leave_one_out(pref.kl_penalized(rewards, logp, ref_logp, KL_COEF), 4))
assert torch.allclose(loss, pref.reinforce_loss(logp, advantages))
print("advantages:", [round(a, 3) for a in advantages.tolist()], f"| loss {loss:.3f} | same as pref ✓")

# %% [markdown]
# The samples the reward model liked more than their siblings get a positive advantage, and the
# gradient step makes them more likely. (PPO, which InstructGPT used, adds a learned value
# baseline and a clipped probability ratio so that each batch of samples can be reused for
# several steps; with fresh samples at every step, REINFORCE with this baseline is what recent
# work found sufficient for language models, at a fraction of the code.) `pref.tune` runs the
# loop: 16 prompts × 4 samples per step, one AdamW step each, for `profile.preference_steps` steps:

# %%
SETTINGS = {"RLHF": pref.TuneConfig(method="rlhf", lr=1e-4, kl_coef=KL_COEF, steps=profile.preference_steps),
            "DPO": pref.TuneConfig(method="dpo", lr=2e-5, beta=0.3, steps=profile.preference_steps)}
policies, histories = {}, {}


def run(name, cfg):
    policy = copy.deepcopy(policy_start)
    t0 = time.perf_counter()
    histories[name] = pref.tune(policy, reference, reward_fn, prompt_ids, vocab, cfg)
    seconds = time.perf_counter() - t0
    policies[name] = policy
    results[name] = dict(pref.evaluate_policy(policy, reference, reward_fn, judge_fn, heldout, vocab),
                         steps=histories[name]["step"][-1], seconds=seconds)
    print(f"{name}: {histories[name]['step'][-1]} steps in {seconds:.0f} s; "
          f"held out: {results[name]['positive (reward model)']:.1%} positive, "
          f"KL {results[name]['KL per token']:.3f} nats/token")


run("RLHF", SETTINGS["RLHF"])

# %% [markdown]
# ## 6. DPO: a loss on pairs
#
# DPO starts from the same objective and notices that its optimum has a closed form,
# $\pi^*(y \mid x) \propto \pi_{\text{ref}}(y \mid x)\, e^{r(x,y)/\beta}$. Solved for the reward,
# $r = \beta \log \frac{\pi^*}{\pi_{\text{ref}}} + \text{const}$: the policy itself defines an
# *implicit* reward. Put that into the Bradley-Terry model of preferences (the probability that
# $y_c$ is preferred to $y_r$ is $\sigma(r_c - r_r)$; the constant cancels) and maximise the
# likelihood of the observed preferences:
#
# $$\mathcal{L}_{\text{DPO}} = -\log \sigma\Big(\beta \big[(\log \pi_\theta(y_c) - \log
# \pi_{\text{ref}}(y_c)) - (\log \pi_\theta(y_r) - \log \pi_{\text{ref}}(y_r))\big]\Big).$$
#
# No reward enters the loss, only which of two answers is preferred. People would rank pairs;
# here the reward model ranks the policy's own samples: of the 4 samples of a prompt, the best
# and the worst make a pair (`pref.preference_pairs`). Fresh pairs at every step from the
# current policy make this *online* DPO. By hand on the four samples above:

# %%
BETA = 0.3
best, worst = int(rewards.argmax()), int(rewards.argmin())
margin = BETA * ((logp[best].sum() - ref_logp[best].sum()) - (logp[worst].sum() - ref_logp[worst].sum()))
dpo = -torch.nn.functional.logsigmoid(margin)
chosen, rejected = pref.preference_pairs(rewards, 4)
lp, rp = logp.sum(1), ref_logp.sum(1)
assert torch.allclose(dpo, pref.dpo_loss(lp[chosen], lp[rejected], rp[chosen], rp[rejected], BETA)[0])
print(f"pair: sample {best} (reward {rewards[best]:.3f}) over sample {worst} ({rewards[worst]:.3f}); "
      f"loss {dpo:.4f} = log 2 while the policy is the reference | same as pref ✓")

# %% [markdown]
# The same loop, the same prompts, the same number of steps of the same size; only the loss
# differs:

# %%
run("DPO", SETTINGS["DPO"])

# %% [markdown]
# ## 7. Results side by side
#
# Reward and KL per step (a moving average over 10 steps), then every measure on the held-out
# prompts:

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
smooth = lambda v: np.convolve(v, np.ones(10) / 10, mode="valid") if len(v) >= 10 else np.asarray(v)
for name, h in histories.items():
    axes[0].plot(smooth(h["reward"]), label=name)
    axes[1].plot(smooth(h["kl"]), label=name)
axes[0].set(title="mean reward of the step's 64 samples", xlabel="step", ylabel="P(positive)")
axes[1].set(title="KL to the reference (sampled, per token)", xlabel="step", ylabel="nats")
for ax in axes:
    ax.legend()
fig.tight_layout()
plt.show()

# %%
print(table(results).to_string())
for name, r in results.items():
    (lo, hi), (jlo, jhi) = r["positive interval"], r["judge interval"]
    print(f"{name:8s} positive by the reward model {r['positive (reward model)']:.1%} [{lo:.1%}, {hi:.1%}], "
          f"by the judge {r['positive (judge)']:.1%} [{jlo:.1%}, {jhi:.1%}]")

# %% [markdown]
# The claims below are checked on this run's numbers. The best method is the one with the larger
# share positive by the reward model; the judge's verdicts on the same prompts are paired, so
# McNemar's test (chapter 10) says whether the untuned and the tuned policy differ, counting only
# the prompts where the judge calls exactly one of the two positive:

# %%
best_name = max(["RLHF", "DPO"], key=lambda m: results[m]["positive (reward model)"])
b, u = results[best_name], results["untuned"]
m = finetune.mcnemar(u["judge_positive"], b["judge_positive"], np.ones(len(heldout)))
config.claim(f"{best_name} makes {b['positive (reward model)']:.1%} of the held-out continuations positive "
             f"by the reward model (untuned {u['positive (reward model)']:.1%}), at least 90%, "
             f"{b['KL per token']:.3f} nats/token from the reference", b["positive (reward model)"] >= 0.9)
config.claim(f"the judge agrees: {b['positive (judge)']:.1%} positive against {u['positive (judge)']:.1%} "
             f"(positive only after tuning: {m['b_only']}, only before: {m['a_only']}; McNemar p = {m['p_value']:.2g})",
             b["positive (judge)"] > u["positive (judge)"] and m["p_value"] < 0.01)
config.claim(f"distinct-2 does not collapse: {b['distinct-2']:.3f} against the untuned {u['distinct-2']:.3f} "
             f"(above two thirds of it)", b["distinct-2"] > 2 / 3 * u["distinct-2"])
config.claim(f"both methods raise the reward model's share by more than 30 points (RLHF "
             f"{results['RLHF']['positive (reward model)'] - u['positive (reward model)']:+.1%}, DPO "
             f"{results['DPO']['positive (reward model)'] - u['positive (reward model)']:+.1%}), and both "
             f"lower distinct-2", all(results[k]["positive (reward model)"] - u["positive (reward model)"] > 0.3
                                      and results[k]["distinct-2"] < u["distinct-2"] for k in ("RLHF", "DPO")))
print(f"the same budget: {profile.preference_steps} steps of 64 samples each; RLHF took "
      f"{results['RLHF']['seconds']:.0f} s, DPO {results['DPO']['seconds']:.0f} s on this machine")

# %% [markdown]
# The same four held-out prompts under the three policies (one sample each, the same seed):

# %%
for i in range(4):
    for name, r in results.items():
        print(f"{name:8s} {r['texts'][i]}")
    print()
for name, r in results.items():
    written = [t[4:].replace("<unk>", "□") for t in r["texts"]]      # □: one character outside the vocabulary
    pairs = Counter(w[i:i + 2] for w in written for i in range(len(w) - 1))
    print(f"{name:8s} most frequent character pairs:", " ".join(f"{g} {c}" for g, c in pairs.most_common(6)))
config.claim("within one continuation the tuned policies repeat themselves no more than the untuned one "
             f"(repetition: untuned {u['repetition']:.3f}, RLHF {results['RLHF']['repetition']:.3f}, "
             f"DPO {results['DPO']['repetition']:.3f})", all(results[k]["repetition"] <= u["repetition"] for k in ("RLHF", "DPO")))

# %% [markdown]
# Both methods move the share of positive reviews a long way in a few hundred steps, and the
# judge, which was never optimised against, sees the change too: the policy writes what a
# positive review says, not something only the reward model likes. What it costs is written in
# the KL column and in distinct-2: the tuned policy has drifted from the reference and uses
# fewer different phrases across prompts (its favourites come back from prompt to prompt: the
# most frequent pairs above), although within one continuation it repeats itself no more than before
# (the claim above). In RLHF the KL coefficient sets that price directly; in DPO it is
# $\beta$, indirectly, through the pairs.
#
# ## 8. Reward hacking, on purpose
#
# Take the KL penalty away and raise the learning rate five-fold: nothing ties the policy to
# readable reviews any more, and it looks for the shortest way to the reward model's maximum.

# %%
run("hacked", pref.TuneConfig(method="rlhf", lr=5e-4, kl_coef=0.0, steps=max(1, profile.preference_steps // 3)))
h, r = results["hacked"], results["RLHF"]
print(table({k: results[k] for k in ("untuned", "RLHF", "hacked")}).to_string())
for text in h["texts"][:4]:
    print("  ", text)
chars = Counter("".join(t[4:] for t in h["texts"]))
top, n = chars.most_common(1)[0]
print(f"{top} is {n / sum(chars.values()):.0%} of the characters the hacked policy wrote")
config.claim(f"without the penalty the reward rises higher ({h['mean reward']:.3f} against RLHF's {r['mean reward']:.3f}) "
             f"in a third of the steps, while distinct-2 falls below half the untuned policy's "
             f"({h['distinct-2']:.3f} against {u['distinct-2']:.3f}) and the KL exceeds 1 nat per token "
             f"({h['KL per token']:.2f})",
             h["mean reward"] > r["mean reward"] and h["distinct-2"] < u["distinct-2"] / 2 and h["KL per token"] > 1)
config.claim(f"the judge is fooled too: it calls {h['positive (judge)']:.1%} of these texts positive, "
             f"against {r['positive (judge)']:.1%} for RLHF's", h["positive (judge)"] >= r["positive (judge)"])

# %% [markdown]
# The reward model is satisfied and the text is no longer a review: what the classifier pays
# for, over and over. The independent judge is fooled as well (the claim above): a judge that
# counts character n-grams likes a positive word however often it comes. Only diversity, the KL
# and reading the text expose it, so a second judge is necessary but not sufficient. This is
# **reward hacking** (Goodhart's law: a measure that becomes a target stops being a good
# measure), and it is why RLHF keeps the KL penalty, why InstructGPT mixed pretraining
# gradients back in, and why reward models are retrained on the policy's new outputs.
#
# ## 9. What this means for ChatGPT
#
# The recipe is the one we ran, at scale. InstructGPT's policy was GPT-3 after supervised
# fine-tuning on answers written by people (our chapter 11); its reward model was trained on
# *human rankings* of several answers to the same prompt (a Bradley-Terry loss on pairs), not on
# labelled reviews; and the RL step was PPO with a per-token KL penalty to the SFT model. Where
# ours rewards one property that a classifier can read, theirs rewards "what a labeller prefers",
# which is harder to learn and easier to hack, hence the same penalty, on a larger scale. DPO
# skips the reward model at the tuning step: it needs only the ranked pairs, which is why many
# open models are tuned with it.
#
# ## 10. Before and after, side by side
#
# The policy the chapter saves is the best one above; `tools/browser_models.py` exports it (int8,
# like the other browser models) next to the untuned policy and the reward model, and
# `tests/test_preference.py` checks that the site's `positive.js` continues 这本书 exactly as the
# line below prints. In JupyterLab the widget below generates from both for your own prompt; on
# the book's website the box after it does the same in your browser.

# %%
from course_utils import export, sampling
from course_utils.widgets import CompareWidget

tuned = policies[best_name]
artifacts.save_tuned_policy(tuned, vocab, {"method": best_name, "steps": results[best_name]["steps"],
                                           "positive": results[best_name]["positive (reward model)"]}, profile)
page_copy = export.browser_model(tuned, "int8")          # what the page computes
start = torch.tensor([vocab.encode("这本书")])
greedy = sampling.generate(page_copy, start, 24, temperature=0, stop_tokens=[2])[0, 3:].tolist()
print(f"the tuned policy as the page computes it, greedy after 这本书: 这本书{vocab.decode(greedy, skip_special=True)}")
CompareWidget({"untuned": policy_start, best_name: tuned}, vocab, reward_fn)

# %% [markdown]
# <div class="gpt-compare" data-models="reviews,positive" data-reward="reward" data-prompt="这本书" data-length="24" data-temperature="1.0" data-seed="0"><p><em>(In JupyterLab this box stays empty: use the widget above. On the book's website it generates from both models side by side.)</em></p></div>
# <script src="../_static/gpt.js"></script>
# <script src="../_static/gpt-demo.js"></script>

# %% [markdown]
# ```{admonition} Pitfalls
# :class: warning
# - **Log-probabilities of the sampling distribution.** REINFORCE and DPO need
#   $\log \pi_\theta(y)$ of the distribution the samples came from. Sampling with top-k, top-p or
#   a temperature other than 1 samples from another distribution than the one the loss
#   differentiates: sample at temperature 1, unfiltered, as `pref.rollout` does.
# - **A reference that moves.** The reference must be a frozen copy: `copy.deepcopy` before
#   tuning, gradients off (`pref.tune` turns them off, and the tests check it never changes).
# - **Judging with the reward model alone.** The number you optimise will go up; check with a
#   judge you did not optimise against, and with diversity and the KL.
# - **Prompts from the test set.** Prompts taken from the classifier's validation or test reviews
#   would leak them into tuning; ours come from the fit reviews only.
# ```
#
# ## Exercises
#
# **Exercise 14.1 (the leave-one-out baseline).** Write `leave_one_out(scores, k)`: for scores
# grouped k at a time (k samples of one prompt), each score minus the mean of the other k - 1.

# %%
from course_utils.exercises import ch14


def leave_one_out(scores, k):
    raise NotImplementedError


_ = ch14.check_leave_one_out(leave_one_out)


# %% tags=["hide-cell"]
def leave_one_out(scores, k):
    g = scores.view(-1, k)
    return (g - (g.sum(1, keepdim=True) - g) / (k - 1)).view(-1)


_ = ch14.check_leave_one_out(leave_one_out)

# %% [markdown]
# **Exercise 14.2 (the DPO loss).** Write `dpo_loss(logp_chosen, logp_rejected, ref_chosen,
# ref_rejected, beta)`, the mean over pairs of section 6's loss (the inputs are summed
# log-probabilities of whole continuations).

# %%
def dpo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, beta):
    raise NotImplementedError


_ = ch14.check_dpo_loss(dpo_loss)


# %% tags=["hide-cell"]
def dpo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, beta):
    margin = beta * ((logp_chosen - ref_chosen) - (logp_rejected - ref_rejected))
    return -torch.nn.functional.logsigmoid(margin).mean()


_ = ch14.check_dpo_loss(dpo_loss)

# %% [markdown]
# **Exercise 14.3 (the exact KL of two next-token distributions).** Write `kl(p_logits,
# q_logits)`: $\mathrm{KL}(p \,\|\, q) = \sum_v p(v) (\log p(v) - \log q(v))$ for the
# distributions two logit vectors give. (`pref.token_kl` computes this at every generated
# position; the loop's sampled estimate $\log p(y) - \log q(y)$ has this as its mean.)

# %%
def kl(p_logits, q_logits):
    raise NotImplementedError


_ = ch14.check_kl(kl)


# %% tags=["hide-cell"]
def kl(p_logits, q_logits):
    logp, logq = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    return (logp.exp() * (logp - logq)).sum()


_ = ch14.check_kl(kl)

# %% [markdown]
# ## Summary
#
# - Preference tuning moves a model toward what a **reward model** prefers, while a **KL
#   penalty** to a frozen **reference** keeps it a language model.
# - **RLHF** here is REINFORCE: sample, score, and weight each sample's log-probability by its
#   advantage over the leave-one-out baseline. **DPO** turns the same objective into a loss on
#   (preferred, rejected) pairs, with no reward in the loss.
# - Judge the result with a measure you did not optimise (an independent classifier), the KL and
#   the diversity, and read the text; a reward that rises while the text degenerates is **reward
#   hacking**, and a second classifier can be fooled by the same trick (section 8).
# - The two tasks of the course meet: chapter 10's classifier taught chapter 10's language model
#   what a positive review is.
