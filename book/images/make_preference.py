"""Draw book/images/preference.png, chapter 14's two ways to tune a policy toward a reward model:
one shared half (a prompt, k = 4 samples of the policy, their rewards and log-probabilities under
the policy and a frozen reference), then RLHF (REINFORCE, leave-one-out baseline, KL penalty) on
the left and DPO (the best against the worst sample) on the right.
Run: python book/images/make_preference.py (numbers: a made-up example, computed by
course_utils.preference's kl_penalized, leave_one_out, reinforce_loss, preference_pairs and
dpo_loss with the chapter's kl_coef and beta; style: _style; saved with a 256-colour palette)."""

from __future__ import annotations

from pathlib import Path

import _style as S
import torch
from matplotlib.patches import FancyBboxPatch
from PIL import Image

from course_utils import preference as P

OUT = Path(__file__).with_name("preference.png")
KL_COEF, BETA = 0.03, 0.3           # the chapter's settings
PROMPT = "这本书很"                  # the first 4 characters of a review
# a made-up example: k = 4 continuations of 3 tokens (characters), their rewards P(positive),
# and each token's log-probability under the policy and under the frozen reference
SAMPLES = ["好看！", "有用。", "一般。", "无聊。"]
REWARD = [0.93, 0.71, 0.35, 0.08]
LOGP = [[-1.1, -0.8, -0.3], [-1.9, -1.2, -0.6], [-2.0, -0.9, -0.5], [-2.9, -1.2, -0.8]]
REF_LOGP = [[-1.6, -1.0, -0.5], [-2.1, -1.3, -0.6], [-1.8, -0.8, -0.5], [-2.3, -1.0, -0.7]]
K = len(SAMPLES)


def example():
    """Both methods' numbers on the example, from the package's own functions."""
    reward, logp, ref = torch.tensor(REWARD), torch.tensor(LOGP), torch.tensor(REF_LOGP)
    score = P.kl_penalized(reward, logp, ref, KL_COEF)
    adv = P.leave_one_out(score, K)
    rl_loss = P.reinforce_loss(logp, adv)
    chosen, rejected = P.preference_pairs(reward, K)
    lp, rp = logp.sum(-1), ref.sum(-1)
    loss, stats = P.dpo_loss(lp[chosen], lp[rejected], rp[chosen], rp[rejected], BETA)
    start, _ = P.dpo_loss(rp[chosen], rp[rejected], rp[chosen], rp[rejected], BETA)  # pi = pi_ref
    return dict(reward=reward, lp=lp, rp=rp, diff=lp - rp, score=score, adv=adv,
                rl_loss=float(rl_loss), c=int(chosen[0]), r=int(rejected[0]), loss=float(loss),
                stats=stats, start=float(start))


def region(ax, x, y, w, h, kind, title, sub):
    """A method's region: a dashed frame in its colour, its name at the top left."""
    fill, edge = S.colors(kind)
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.3,rounding_size=1.2",
                                fc="#fcfcfc", ec=edge, lw=1.3, ls="--", zorder=1))
    S.label(ax, x + 1.0, y + h - 1.6, title, size=10.5, weight="bold", ha="left", color=edge)
    S.label(ax, x + 1.0, y + h - 3.7, sub, size=8.5, color=S.MUTED, ha="left")


def table(ax, x, top, widths, header, rows, fills=None, colors=None, ch=2.3, size=8.6):
    """A small table: a grey header row, then `rows` (lists of strings), columns `widths` wide."""
    data = [header] + rows
    xs = [x + sum(widths[:c]) for c in range(len(widths))]
    for r, row in enumerate(data):
        for c, text in enumerate(row):
            fc = "#eeeeee" if r == 0 else (fills(r - 1, c) if fills else "white")
            ax.add_patch(FancyBboxPatch((xs[c], top - (r + 1) * ch), widths[c], ch, fc=fc,
                                        boxstyle="square,pad=0", ec="#aaa", lw=0.7, zorder=2))
            color = S.MUTED if r == 0 else (colors(r - 1, c) if colors else S.INK)
            S.label(ax, xs[c] + widths[c] / 2, top - (r + 0.5) * ch, text,
                    size=size - 0.4 * (r == 0), color=color, zorder=3)
    ax.add_patch(FancyBboxPatch((x, top - len(data) * ch), sum(widths), len(data) * ch,
                                boxstyle="square,pad=0", fc="none", ec=S.INK, lw=1.0, zorder=3))
    return top - len(data) * ch


def main(out: Path = OUT) -> Path:
    e = example()
    ry = 7.8                              # the two regions' bottom (their top: 39)
    bus = ry - 2.8                        # the update loop runs under them
    fig, ax = S.canvas(figsize=(10, 10 * (64.5 - bus) / 102.5), xlim=(-2.5, 100),
                       ylim=(bus - 1, 63.5))
    green, red = S.USE[1], S.RED[1]

    # ---- the shared half: prompt -> the policy samples k -> reward model, reference, policy score
    top = 63.0
    S.box(ax, 0.8, 49, 12.5, 10, "data", "prompt 提示", [PROMPT],
          tag="a review's first 4 chars", title_size=10, size=11, tag_size=7.5, dy=2)
    S.box(ax, 17, 47.5, 16.5, 13, "tune", "policy π 策略", ["ch. 10's review GPT,",
          "being tuned: samples", f"k = {K}, log π per token"], tag="rollout, token_logprobs",
          title_size=10, size=8.4, tag_size=7.5, dy=2)
    S.arrow(ax, (13.7, 54), (16.7, 54))
    S.arrow(ax, (33.8, 54), (37.2, 54))

    tx, widths = 37.5, [10.5, 6.5, 7, 7.5, 10.5]
    tw = sum(widths)
    S.label(ax, tx + tw / 2, top - 0.2, f"{K} samples of one prompt, scored   (made-up example)",
            size=9.5, weight="bold")
    header = ["sample", "reward r", "Σ log π", "Σ log π_ref", "Σ log(π/π_ref)"]
    rows = [[PROMPT + s, f"{e['reward'][i]:.2f}", f"{e['lp'][i]:.1f}", f"{e['rp'][i]:.1f}",
             f"{e['diff'][i]:+.1f}"] for i, s in enumerate(SAMPLES)]
    source = {1: S.GREY[0], 2: S.TUNE[0], 3: S.GREY[0]}   # who fills the column: its colour
    tbottom = table(ax, tx, top - 1.6, widths, header, rows, size=8.4,
                    fills=lambda r, c: S.DATA[0] if c == 0 else source.get(c, "white"))
    S.label(ax, tx + tw / 2, tbottom - 1.5, f"sums over the {len(LOGP[0])} generated tokens; "
            "the last column: the sampled KL", size=8, color=S.MUTED)

    S.box(ax, 83, 53.8, 16.2, 8, "grey", "reward model", ["ch. 10's sentiment",
          "classifier, frozen:", "r = P(positive)"], title_size=9.5, size=8.3, gap=1.3)
    S.box(ax, 83, 41.5, 16.2, 9.6, "grey", "reference π_ref", ["the policy before",
          "tuning, frozen:", "log π_ref per token"], tag="never updated", title_size=9.5,
          size=8.3, gap=1.3, tag_size=7.5, dy=2)
    S.arrow(ax, (82.6, 57.8), (tx + tw + 0.3, 57.8), color=S.GREY[1])
    S.arrow(ax, (82.6, 50.7), (tx + tw + 0.3, 50.7), color=S.GREY[1])

    # ---- two regions below, fed by the same table
    rt = 39.0
    rh = rt - ry
    for x in (tx + 4, tx + tw - 4):
        S.arrow(ax, (x, tbottom - 2.8), (x, rt + 0.5))

    # ---- left: RLHF
    rx, rw = 0.8, 48.4
    region(ax, rx, ry, rw, rh, "tune", "RLHF: REINFORCE with a leave-one-out baseline",
           f"every sample counts, by how much it beat the others;  kl_coef = {KL_COEF:g}")
    y = rt - 6.6
    S.label(ax, rx + 1.0, y, "score = r − kl_coef · Σ_t (log π − log π_ref)      (kl_penalized)",
            size=8.6, ha="left")
    S.label(ax, rx + 1.0, y - 2.3, f"advantage A = score − mean of the other {K - 1} scores"
            "   (leave_one_out)", size=8.6, ha="left")
    adv = e["adv"]
    rows = [[s, f"{e['reward'][i]:.2f}", f"{e['score'][i] - e['reward'][i]:+.3f}",
             f"{e['score'][i]:.3f}", f"{adv[i]:+.3f}", "likelier" if adv[i] > 0 else "less likely"]
            for i, s in enumerate(SAMPLES)]
    bottom = table(ax, rx + 1.5, y - 4.0, [7.5, 6.5, 7.5, 6.5, 7.5, 9.5],
                   [PROMPT + "…", "r", "KL term", "score", "A", "pushes it"], rows,
                   fills=lambda r, c: (S.USE[0] if adv[r] > 0 else S.RED[0]) if c > 3 else "white",
                   colors=lambda r, c: (green if adv[r] > 0 else red) if c >= 4 else S.INK)
    S.label(ax, rx + 1.0, bottom - 2.4, "loss = −mean_i  A_i · log π(sample_i)"
            f"  =  {e['rl_loss']:.3f}   (reinforce_loss)", size=8.6, ha="left")
    S.label(ax, rx + 1.0, bottom - 4.7, "its gradient raises log π where A > 0 and lowers it "
            "where A < 0;", size=8.2, color=S.MUTED, ha="left")
    S.label(ax, rx + 1.0, bottom - 6.7, "the KL term keeps π from drifting far from π_ref",
            size=8.2, color=S.MUTED, ha="left")

    # ---- right: DPO
    dx, dw = 50.8, 48.4
    region(ax, dx, ry, dw, rh, "use", "DPO: direct preference optimisation",
           f"no reward in the loss, only the ranking;  β = {BETA:g}")
    c, r = e["c"], e["r"]
    S.label(ax, dx + 1.0, y, f"the best and the worst of the {K} by r become a pair"
            "   (preference_pairs)", size=8.6, ha="left")
    S.label(ax, dx + 1.0, y - 2.3, "implicit reward = β · (Σ log π − Σ log π_ref)", size=8.6,
            ha="left")
    implicit = [e["stats"]["reward_chosen"], e["stats"]["reward_rejected"]]
    rows = [[role, SAMPLES[i], f"{e['reward'][i]:.2f}", f"{e['diff'][i]:+.1f}", f"{imp:+.3f}"]
            for role, i, imp in (("chosen", c, implicit[0]), ("rejected", r, implicit[1]))]
    bottom = table(ax, dx + 1.5, y - 4.0, [9, 7.5, 6.5, 10.5, 10.5],
                   ["pair", PROMPT + "…", "r", "Σ log(π/π_ref)", "implicit reward"], rows,
                   fills=lambda r_, c_: (S.USE[0] if r_ == 0 else S.RED[0]) if c_ == 0 else "white",
                   colors=lambda r_, c_: (green if r_ == 0 else red) if c_ == 0 else S.INK)
    unused = " and ".join(SAMPLES[i] for i in range(K) if i not in (c, r))
    S.label(ax, dx + 1.0, bottom - 2.0, f"{unused} (the middle two) are not used", size=8.2,
            color=S.MUTED, ha="left")
    S.label(ax, dx + 1.0, bottom - 4.6, "loss = −log σ(β · [(log π_c − log π_ref,c) − "
            "(log π_r − log π_ref,r)])", size=8.6, ha="left")
    S.label(ax, dx + 1.0, bottom - 7.0, f"      = −log σ({implicit[0]:.2f} − "
            f"({implicit[1]:.2f}))  =  {e['loss']:.3f}   (dpo_loss)", size=8.6, ha="left")
    S.label(ax, dx + 1.0, bottom - 9.3, "at the start, π = π_ref: loss = log 2 = "
            f"{e['start']:.3f}; it falls as π", size=8.2, color=S.MUTED, ha="left")
    S.label(ax, dx + 1.0, bottom - 11.3, "pulls chosen up and rejected down, relative to π_ref",
            size=8.2, color=S.MUTED, ha="left")

    # ---- either loss updates the policy: a loop under both regions, back up to π
    up = -1.6
    loop = S.TUNE[1]
    ax.plot([rx + rw / 2] * 2, [ry - 0.3, bus], color=loop, lw=1.6, zorder=3)
    ax.plot([dx + dw / 2, dx + dw / 2, up, up, 25.2], [ry - 0.3, bus, bus, 44.5, 44.5], color=loop,
            lw=1.6, zorder=3)                  # one polyline: its box counts when trimming
    S.arrow(ax, (25.2, 44.5), (25.2, 47.2), color=loop, lw=1.6)
    S.label(ax, 50, bus, "either loss → one AdamW step on π (the reference never changes)",
            size=8.3, color=loop, weight="bold", bbox=dict(fc="white", ec="none", pad=1.0),
            zorder=4)
    return compact(S.save(fig, out))


def compact(path: Path) -> Path:
    """Re-save the PNG with a 256-colour palette (flat colours and text: no visible change, a
    third of the bytes; this figure holds more text than most)."""
    img = Image.open(path).convert("RGB")
    img = img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    img.save(path, optimize=True)
    return path


if __name__ == "__main__":
    print(main())
