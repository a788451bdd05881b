#!/usr/bin/env python3
"""Prompt-to-Prompt reference on the tiny fixture model: the spec fpi's Rust edit code is tested against.

    .venv-ref/bin/python tests/reference/make_p2p_reference.py

Reads tests/fixtures/p2p-cases.json (written by this script when missing or with --write-cases) and
tests/fixtures/tiny-sd, writes tests/fixtures/reference/p2p.safetensors. CPU, offline, deterministic.

Prompt-to-Prompt is Hertz et al., arXiv 2208.01626 (code: google/prompt-to-prompt, `ptp_utils.py`,
`seq_aligner.py`, the null-text notebook's `LocalBlend`; the FPI authors' copy in dvirsamuel/FPI `p2p/`). This is
an independent implementation of the same rules, written out so that each can be ported one to one.

SPEC
====

Notation: `steps` DDIM steps, step index i = 0 .. steps-1 (i = number of UNet calls already finished), `g` the
guidance, 77 = CLIP's context length, H = heads of a layer, Q = its query count, K = its key count (77 for cross).

Sampling
  * diffusers DDIMScheduler from the model's scheduler config (scaled_linear betas 0.00085..0.012, 1000 train
    steps, steps_offset 1, set_alpha_to_one False, "leading" spacing, clip_sample False), eta 0.
  * Latents: batch 2 [x_src, x_tgt]; both start as the same x_T.
  * One UNet call per step on the batch of 4 latents [x_src, x_tgt, x_src, x_tgt] with text states
    [uncond, uncond, cond_src, cond_tgt] (uncond = CLIP of ""; prompts padded with <|endoftext|> to 77).
    eps = eps_u + g * (eps_c - eps_u) per branch, then the scheduler step on [x_src, x_tgt], then the local-blend
    callback (if any) on the stepped latents.

Attention
  * Every attention layer of the UNet computes p = softmax(q k^T * scale) per head explicitly, [4*H, Q, K] with row
    b*H + h (batch-major, as diffusers' head_to_batch_dim), passes p to the controller with (is_cross, place in
    {down, mid, up}, Q), and uses the returned p for p v.
  * Visit order = diffusers' forward order: down blocks, mid block, up blocks; in each transformer block attn1
    (self) then attn2 (cross). The tiny model has 12 layers per UNet call (down.0: 2 blocks x 2, mid: 2,
    up.1: 3 blocks x 2). After the last layer of a call, the step index advances (i += 1).
  * The controller only touches the conditional half, rows 2H..4H, seen as C[2, H, Q, K]:
    base = C[0] (source branch), tgt = C[1] (target branch). base is never changed.

Cross-attention layers (every one, any Q)
  * tgt <- alpha[i] * R(base, tgt) + (1 - alpha[i]) * tgt, alpha[i] a [77] vector over target tokens.
  * R by mode:
      replace : R[h, q, n] = sum_w base[h, q, w] * M[w, n]           (M = replacement mapper, 77x77 f32)
      refine  : R[h, q, n] = base[h, q, map[n]] * a[n] + tgt[h, q, n] * (1 - a[n])
                (map, a = refinement mapper and alphas; map[n] = -1 where a[n] = 0: gather any valid column,
                e.g. 76 as Python's negative index does, the product with a[n] = 0 makes it irrelevant)
      reweight: R <- R * E[n] applied after the mode's R (E = equalizer, [77]); reweight is a modifier of
                replace or refine, never alone.
  * alpha (get_time_words_attention_alpha): a table [steps + 1, 77]. For bounds (b0, b1) (a float f means (0, f)):
    rows [int(b0 * (steps + 1)), int(b1 * (steps + 1))) are 1, the rest 0 -- NB: the original scales by
    steps + 1 (the table's row count), not by steps; for steps = 10, f = 0.8 both give 8. The default bounds set
    every token column; a per-word entry {word: bounds} then overwrites that word's token columns (positions in the
    target prompt). Row i is used at step i (row `steps` is never used).

Self-attention layers
  * For int(s0 * steps) <= i < int(s1 * steps) (self_steps s: a float s1 means (0, s1); scaled by steps here, not
    steps + 1) and only in layers with Q <= 16 * 16 = 256: tgt <- base. Otherwise unchanged.
    (The FPI copy uses Q <= 16^2; google's null-text notebook uses 32^2. At the tiny model's 32 px every layer has
    Q <= 256.)

Attention store (for local blend)
  * After the edit above, every cross-attention layer with Q == 256 (16 x 16 queries) adds its conditional half
    C[2, H, 256, 77] as returned by the controller (i.e. the target branch's maps are the edited ones: the original
    stores a view that the edit then overwrites in place) to a per-layer running SUM over steps. The sum for
    step i is complete when the UNet call of step i ends (before the scheduler step and the blend callback).
    At 512 px in SD1.5 these are down_cross[2:4] + up_cross[:3]; at the tiny model's 32 px (16 x 16 latents) they
    are the 2 cross layers of down block 0 and the 3 of up block 1. Sum vs mean over steps does not change the
    mask (it is divided by its max).

Local blend (null-text notebook's LocalBlend with start_blend; after scheduler step i)
  * Applied iff i + 1 > int(blend_start * steps) (the notebook's counter is incremented first, then compared); with
    steps 10, start 0.2: after steps i = 2..9.
  * For each branch b (words_b = the blend words of that branch's prompt, their token positions W_b):
      m_b[y, x] = mean over (layer, head) of sum over n in W_b of S[layer][b, head, y*16 + x, n]   (16 x 16)
      m_b = max_pool 3x3, stride 1, padding 1 (padding never wins: -inf)
      m_b = nearest upsample to the latent size (torch "nearest": src = floor(dst * in / out)); identity at 16 x 16
      m_b = m_b / max(m_b);  bool_b = m_b > threshold
    mask = bool_src OR bool_tgt, as 0/1 f32.
  * x_tgt <- x_src + mask * (x_tgt - x_src); x_src unchanged.

Word -> token positions (get_word_inds)
  * Split the prompt on single spaces " " into words. Tokenize the prompt without padding and without
    <|startoftext|>/<|endoftext|>: tokens t_1..t_T (position 1 = first real token; 0 is <|startoftext|>).
    Each token's length = the length (in characters) of its decoded text, i.e. the vocab string with "</w>"
    removed, byte-decoded, whitespace-trimmed and with '#' stripped from both ends.
  * Walk tokens with (word pointer w = 0, running length c = 0): c += len(t_k); if w is a selected word, position k
    belongs to it; if c >= len(words[w]) then w += 1, c = 0.
  * A word given as a string selects every word equal to it (exact match); as an int, that word index.

Replacement mapper (get_replacement_mapper, M[77, 77])
  * The prompts must have the same number of words. Changed words: indices k with src_words[k] != tgt_words[k],
    in order; for each, S_k = its token positions in the source, T_k in the target.
  * i = j = 0, c = 0; while i < 77 and j < 77:
      if c < #changed and S_c[0] == i:
          if |S_c| == |T_c|: M[S_c[r], T_c[r]] = 1 for each r
          else:             M[s, t] = 1 / |T_c| for every s in S_c, t in T_c
          i += |S_c|; j += |T_c|; c += 1
      elif c < #changed: M[i, j] = 1; i += 1; j += 1
      else:              M[j, j] = 1; i += 1; j += 1        (sic: [j, j], not [i, j], after the last changed word)

Refinement mapper (get_refinement_mapper)
  * x = source token ids, y = target token ids, each with <|startoftext|> and <|endoftext|>, no padding.
  * Needleman-Wunsch with gap 0, match +1, mismatch -1: F[i][0] = F[0][j] = 0;
    F[i][j] = max(left = F[i][j-1] + 0, up = F[i-1][j] + 0, diag = F[i-1][j-1] + (x[i-1] == y[j-1] ? 1 : -1)),
    ties prefer left, then up, then diag.
  * Traceback from (|x|, |y|) while i > 0 or j > 0 (row 0 always moves left, column 0 always up):
      diag: src_of[j-1] = i-1, i -= 1, j -= 1;  left: src_of[j-1] = -1, j -= 1;  up: i -= 1.
  * map[n] = src_of[n], a[n] = (src_of[n] != -1) for n < |y|;  map[n] = n, a[n] = 1 for |y| <= n < 77.

Equalizer (get_equalizer): E = ones(77); for each (word, factor): E[token positions of word in the target] = factor.

Cases (tests/fixtures/p2p-cases.json): "common" settings, then "cases", each with name, source, target, mode
(replace | refine), optional reweight {word: factor}, optional blend {"source": [words], "target": [words]}; a
case's cross_steps / self_steps / blend_threshold / blend_start override common's. "note" is a comment. Optional
cross_word_steps {word: f} gives per-word cross windows: the alpha table is built from
{"default_": cross_steps, **cross_word_steps} (notebooks' dict form of cross_replace_steps, e.g. {"guitar": 0.2}).
size is in pixels (latent side = size / 2 for the tiny model's VAE); x_T = torch.randn([1, 4, 16, 16]) from
torch.Generator().manual_seed(seed), stored as x_t, so Rust needs no torch RNG.

Sensitivity (for sizing tests; measured with this script's setup). The tiny random model barely listens to the
prompt: plain sampling of "...camera" vs "...guitar" differs by 6.4e-4 relative, and cross-attention is nearly
uniform over the 77 tokens. Relative to the full target latents, the replace edit differs from no edit by only
9.6e-5, and moving a window end by one step changes the target by 1e-7..1e-4. Relative to the edit-induced
difference delta = x_tgt - x_src, the same changes are 5e-4..3e-2, while changing only the rounding of q k^T
(torch.baddbmm instead of bmm * scale) moves delta by 3e-5..8e-4. Compare delta as well as the latents.

Outputs (tests/fixtures/reference/p2p.safetensors, f32 unless noted)
  x_t [1,4,16,16]; plain.latents [1,4,16,16] (plain DDIM of the first case's source prompt, batch 2 CFG, diffusers'
  own attention, no controller); per case: {case}.latents [2,4,16,16] ([source, target] before VAE decode),
  {case}.source_tokens / {case}.target_tokens (i64 [77]), {case}.mapper ([77,77] f32 for replace, i64 [77] for
  refine), {case}.alphas [77] (refine), {case}.equalizer [77] (reweight), {case}.mask [16,16] (blend: the mask
  applied after the last step), {case}.alpha [steps+1,77] (cross_word_steps: the cross alpha table).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

TESTS = Path(__file__).resolve().parents[1]
MODEL = TESTS / "fixtures" / "tiny-sd"
CASES = TESTS / "fixtures" / "p2p-cases.json"
OUT = TESTS / "fixtures" / "reference" / "p2p.safetensors"

MAX_TOKENS = 77
STORE_QUERIES = 16 * 16  # cross layers whose maps feed the local blend
SELF_REPLACE_MAX_QUERIES = 16 * 16  # self-attention replaced only in layers with at most this many queries

DEFAULT_CASES = {
    "common": {
        "size": 32,
        "steps": 10,
        "guidance": 2.0,
        "seed": 0,
        "cross_steps": 0.8,
        "self_steps": 0.4,
        "blend_threshold": 0.3,
        "blend_start": 0.2,
    },
    "cases": [
        {"name": "same", "source": "a man with a camera", "target": "a man with a camera", "mode": "replace"},
        {"name": "replace", "source": "a man with a camera", "target": "a man with a guitar", "mode": "replace"},
        {"name": "refine", "source": "a man with a camera", "target": "a man with a red camera", "mode": "refine"},
        {
            "name": "reweight",
            "source": "a man with a camera",
            "target": "a man with a camera",
            "mode": "replace",
            "reweight": {"camera": 4.0},
        },
        {
            "name": "blend",
            "source": "a man with a camera",
            "target": "a man with a guitar",
            "mode": "replace",
            "blend": {"source": ["camera"], "target": ["guitar"]},
            "blend_threshold": 0.97,
            "note": "the tiny model's cross-attention is nearly uniform (normalized pooled maps lie in 0.84..1), so "
            "P2P's threshold 0.3 keeps every pixel; 0.97 keeps 34 of 256 and no map value lies within 1e-3 of it "
            "at any blend step",
        },
        # "harmonica" is 2 tokens (harmon, ica): the replacement mapper spreads camera's column over both (1/2 each)
        {"name": "multi", "source": "a man with a camera", "target": "a man with a harmonica", "mode": "replace"},
        # per-word window: guitar's column is edited at steps [0, int(0.1 * 11)) = step 0 only, the others at 0..7
        # (0.3 would move the edit delta by only 1.8e-2 relative vs "replace"; 0.1 moves it 6.5e-2)
        {
            "name": "word_window",
            "source": "a man with a camera",
            "target": "a man with a guitar",
            "mode": "replace",
            "cross_word_steps": {"guitar": 0.1},
        },
    ],
}


# ----------------------------------------------------------------------------------------------- tokens and words


def padded_ids(tok, prompt):
    return tok(prompt, padding="max_length", max_length=MAX_TOKENS, truncation=True).input_ids


def token_text_length(tok, token_id):
    return len(tok.decode([token_id]).strip("#"))


def word_token_positions(tok, prompt, word):
    """Token positions (1-based: 0 is <|startoftext|>) of a word: a string selects every equal word, an int one word."""
    words = prompt.split(" ")
    selected = {k for k, w in enumerate(words) if w == word} if isinstance(word, str) else {word}
    positions = []
    if not selected:
        return positions
    body = tok.encode(prompt)[1:-1]
    w, c = 0, 0
    for k, token_id in enumerate(body):
        c += token_text_length(tok, token_id)
        if w in selected:
            positions.append(k + 1)
        if c >= len(words[w]):
            w, c = w + 1, 0
    return positions


# ----------------------------------------------------------------------------------------------- mappers


def replacement_mapper(tok, source, target):
    src_words, tgt_words = source.split(" "), target.split(" ")
    if len(src_words) != len(tgt_words):
        raise ValueError("replace needs prompts with the same number of words")
    changed = [k for k in range(len(src_words)) if src_words[k] != tgt_words[k]]
    src_pos = [word_token_positions(tok, source, k) for k in changed]
    tgt_pos = [word_token_positions(tok, target, k) for k in changed]
    m = np.zeros((MAX_TOKENS, MAX_TOKENS), dtype=np.float64)
    i = j = c = 0
    while i < MAX_TOKENS and j < MAX_TOKENS:
        if c < len(changed) and src_pos[c][0] == i:
            s, t = src_pos[c], tgt_pos[c]
            if len(s) == len(t):
                for a, b in zip(s, t):
                    m[a, b] = 1.0
            else:
                for a in s:
                    for b in t:
                        m[a, b] = 1.0 / len(t)
            i, j, c = i + len(s), j + len(t), c + 1
        elif c < len(changed):
            m[i, j] = 1.0
            i, j = i + 1, j + 1
        else:
            m[j, j] = 1.0  # sic, as the original
            i, j = i + 1, j + 1
    return torch.from_numpy(m).float()


GAP, MATCH, MISMATCH = 0, 1, -1
LEFT, UP, DIAG = 1, 2, 3


def align(x, y):
    """Needleman-Wunsch; returns src_of[j] for each target position j (-1: no source token)."""
    n, m = len(x), len(y)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    move = [[0] * (m + 1) for _ in range(n + 1)]
    for j in range(1, m + 1):
        score[0][j] = j * GAP
        move[0][j] = LEFT
    for i in range(1, n + 1):
        score[i][0] = i * GAP
        move[i][0] = UP
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            left = score[i][j - 1] + GAP
            up = score[i - 1][j] + GAP
            diag = score[i - 1][j - 1] + (MATCH if x[i - 1] == y[j - 1] else MISMATCH)
            best = max(left, up, diag)
            score[i][j] = best
            move[i][j] = LEFT if best == left else UP if best == up else DIAG
    src_of = [None] * m
    i, j = n, m
    while i > 0 or j > 0:
        if move[i][j] == DIAG:
            src_of[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif move[i][j] == LEFT:
            src_of[j - 1] = -1
            j -= 1
        else:
            i -= 1
    return src_of


def refinement_mapper(tok, source, target):
    x, y = tok.encode(source), tok.encode(target)
    src_of = align(x, y)
    mapper = torch.arange(MAX_TOKENS, dtype=torch.int64)
    alphas = torch.ones(MAX_TOKENS)
    for n, s in enumerate(src_of):
        mapper[n] = s
        alphas[n] = 0.0 if s == -1 else 1.0
    return mapper, alphas


def equalizer(tok, target, factors):
    e = torch.ones(MAX_TOKENS)
    for word, factor in factors.items():
        e[word_token_positions(tok, target, word)] = factor
    return e


def cross_alpha_table(tok, target, steps, cross_steps):
    """[steps + 1, 77]; cross_steps: f, (b0, b1), or {"default_": f|(b0, b1), word: f|(b0, b1), ...}."""
    spec = dict(cross_steps) if isinstance(cross_steps, dict) else {"default_": cross_steps}
    spec.setdefault("default_", (0.0, 1.0))
    table = torch.zeros(steps + 1, MAX_TOKENS)

    def set_columns(bounds, columns):
        b0, b1 = (0.0, bounds) if isinstance(bounds, (int, float)) else bounds
        start, end = int(b0 * (steps + 1)), int(b1 * (steps + 1))
        table[:start, columns] = 0.0
        table[start:end, columns] = 1.0
        table[end:, columns] = 0.0

    set_columns(spec["default_"], list(range(MAX_TOKENS)))
    for word, bounds in spec.items():
        if word != "default_":
            cols = word_token_positions(tok, target, word)
            if cols:
                set_columns(bounds, cols)
    return table


# ----------------------------------------------------------------------------------------------- controller


class P2PController:
    """Edits the conditional half's attention probabilities and blends the latents, as the SPEC above."""

    def __init__(self, *, steps, layers_per_call, mode, mapper, alphas=None, equalizer=None, cross_alpha,
                 self_steps, blend_positions=None, blend_threshold=0.3, blend_start=0.2):
        self.steps = steps
        self.layers_per_call = layers_per_call
        self.mode = mode
        self.mapper = mapper
        self.alphas = alphas
        self.equalizer = equalizer
        self.cross_alpha = cross_alpha
        s0, s1 = (0.0, self_steps) if isinstance(self_steps, (int, float)) else self_steps
        self.self_window = (int(s0 * steps), int(s1 * steps))
        self.blend_positions = blend_positions  # [source positions, target positions] or None
        self.blend_threshold = blend_threshold
        self.blend_first_step = int(blend_start * steps)  # blend after step i iff i + 1 > this
        self.step = 0
        self.layer = 0
        self.store_step = []  # this call's stored maps, in visit order
        self.store_sum = None  # per layer: running sum over steps, [2, H, 256, 77]
        self.last_mask = None

    def cross_edit(self, base, tgt):
        if self.mode == "replace":
            r = torch.einsum("hqw,wn->hqn", base, self.mapper)
        elif self.mode == "refine":
            r = base[:, :, self.mapper] * self.alphas + tgt * (1 - self.alphas)
        else:
            raise ValueError(self.mode)
        if self.equalizer is not None:
            r = r * self.equalizer
        a = self.cross_alpha[self.step]
        return a * r + (1 - a) * tgt

    def attention(self, p, is_cross, place, queries):
        heads = p.shape[0] // 4
        cond = p[2 * heads:].reshape(2, heads, *p.shape[1:])
        base, tgt = cond[0], cond[1]
        lo, hi = self.self_window
        if is_cross:
            tgt = self.cross_edit(base, tgt)
        elif lo <= self.step < hi and queries <= SELF_REPLACE_MAX_QUERIES:
            tgt = base
        new_cond = torch.stack([base, tgt])
        if is_cross and queries == STORE_QUERIES:
            self.store_step.append(new_cond.clone())
        p = torch.cat([p[: 2 * heads], new_cond.reshape(2 * heads, *p.shape[1:])])
        self.layer += 1
        if self.layer == self.layers_per_call:
            self.layer = 0
            self.step += 1
            if self.store_sum is None:
                self.store_sum = self.store_step
            else:
                self.store_sum = [a + b for a, b in zip(self.store_sum, self.store_step)]
            self.store_step = []
        return p

    def blend_mask(self, latent_hw):
        masks = []
        for b in range(2):
            cols = self.blend_positions[b]
            per_layer = [s[b][:, :, cols].sum(-1) for s in self.store_sum]  # each [H, 256]
            m = torch.cat(per_layer).mean(0).reshape(1, 1, 16, 16)
            m = F.max_pool2d(m, kernel_size=3, stride=1, padding=1)
            m = F.interpolate(m, size=latent_hw, mode="nearest")
            m = m / m.max()
            masks.append(m[0, 0] > self.blend_threshold)
        return (masks[0] | masks[1]).float()

    def after_step(self, latents, i):
        """Local blend after scheduler step i (latents [2, 4, h, w] = [x_src, x_tgt])."""
        if self.blend_positions is None or not (i + 1 > self.blend_first_step):
            return latents
        mask = self.blend_mask(latents.shape[2:])
        self.last_mask = mask
        x_src, x_tgt = latents[0], latents[1]
        return torch.stack([x_src, x_src + mask * (x_tgt - x_src)])


# ----------------------------------------------------------------------------------------------- UNet hook


class Hook:
    controller = None
    trace = None  # list to record (place, is_cross, queries) of each visited layer, or None


class ExplicitAttention:
    """Attention processor computing the probabilities explicitly and passing them to Hook.controller."""

    def __init__(self, hook, place, is_cross):
        self.hook, self.place, self.is_cross = hook, place, is_cross

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert attention_mask is None and attn.spatial_norm is None and attn.group_norm is None
        assert hidden_states.ndim == 3 and not attn.residual_connection and not attn.norm_cross
        assert (encoder_hidden_states is not None) == self.is_cross
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        p = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * attn.scale, dim=-1)
        if self.hook.trace is not None:
            self.hook.trace.append((self.place, self.is_cross, q.shape[1]))
        if self.hook.controller is not None:
            p = self.hook.controller.attention(p, self.is_cross, self.place, q.shape[1])
        out = attn.batch_to_head_dim(torch.bmm(p, v))
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def install_hook(unet, hook):
    processors = {}
    for name in unet.attn_processors:
        place = "down" if name.startswith("down_blocks") else "mid" if name.startswith("mid_block") else "up"
        assert name.startswith(("down_blocks", "mid_block", "up_blocks")), name
        processors[name] = ExplicitAttention(hook, place, name.endswith("attn2.processor"))
    count = len(processors)
    unet.set_attn_processor(processors)  # (empties the dict)
    return count


# ----------------------------------------------------------------------------------------------- sampling


def scheduler(steps):
    config = json.loads((MODEL / "scheduler" / "scheduler_config.json").read_text())
    s = DDIMScheduler.from_config({**config, "_class_name": "DDIMScheduler"})
    s.set_timesteps(steps)
    return s


def sample_plain(unet, uncond, cond, x_t, steps, guidance):
    sched = scheduler(steps)
    ctx = torch.cat([uncond, cond])
    x = x_t
    for t in sched.timesteps:
        eps_u, eps_c = unet(torch.cat([x, x]), t, encoder_hidden_states=ctx).sample.chunk(2)
        x = sched.step(eps_u + guidance * (eps_c - eps_u), t, x).prev_sample
    return x


def sample_edit(unet, hook, controller, uncond, cond_src, cond_tgt, x_t, steps, guidance):
    sched = scheduler(steps)
    ctx = torch.cat([uncond, uncond, cond_src, cond_tgt])
    x = x_t.expand(2, *x_t.shape[1:]).clone()
    hook.controller = controller
    try:
        for i, t in enumerate(sched.timesteps):
            eps_u, eps_c = unet(torch.cat([x, x]), t, encoder_hidden_states=ctx).sample.chunk(2)
            x = sched.step(eps_u + guidance * (eps_c - eps_u), t, x).prev_sample
            x = controller.after_step(x, i)
    finally:
        hook.controller = None
    assert controller.step == steps and controller.layer == 0
    return x


def rel(a, b):
    return float((a - b).norm() / b.norm())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write-cases", action="store_true", help="(re)write p2p-cases.json from DEFAULT_CASES")
    args = ap.parse_args()
    if args.write_cases or not CASES.exists():
        CASES.write_text(json.dumps(DEFAULT_CASES, indent=2) + "\n")
    spec = json.loads(CASES.read_text())
    common = spec["common"]
    steps, guidance, size = common["steps"], common["guidance"], common["size"]

    torch.manual_seed(0)
    tok = CLIPTokenizer.from_pretrained(MODEL / "tokenizer")
    clip = CLIPTextModel.from_pretrained(MODEL / "text_encoder", variant="fp16", torch_dtype=torch.float32).eval()
    unet = UNet2DConditionModel.from_pretrained(MODEL / "unet").eval()
    vae_factor = 2 ** (len(json.loads((MODEL / "vae" / "config.json").read_text())["block_out_channels"]) - 1)
    latent = size // vae_factor

    def encode(prompt):
        return clip(torch.tensor([padded_ids(tok, prompt)])).last_hidden_state

    refs = {}
    with torch.no_grad():
        x_t = torch.randn(1, unet.config.in_channels, latent, latent, generator=torch.Generator().manual_seed(common["seed"]))
        refs["x_t"] = x_t
        uncond = encode("")

        # plain sampling with diffusers' own attention (no hook installed yet)
        first_source = spec["cases"][0]["source"]
        plain = sample_plain(unet, uncond, encode(first_source), x_t, steps, guidance)
        refs["plain.latents"] = plain

        hook = Hook()
        n_layers = install_hook(unet, hook)
        hook.trace = []
        plain_explicit = sample_plain(unet, uncond, encode(first_source), x_t, 1, guidance)
        print(f"{n_layers} attention layers, visit order: "
              + " ".join(f"{p}.{'x' if c else 's'}{q}" for p, c, q in hook.trace))
        assert len(hook.trace) == n_layers
        hook.trace = None
        plain_explicit = sample_plain(unet, uncond, encode(first_source), x_t, steps, guidance)
        print(f"plain: explicit-softmax attention vs diffusers' attention: rel {rel(plain_explicit, plain):.3e}")

        for case in spec["cases"]:
            name, src, tgt, mode = case["name"], case["source"], case["target"], case["mode"]
            refs[f"{name}.source_tokens"] = torch.tensor(padded_ids(tok, src), dtype=torch.int64)
            refs[f"{name}.target_tokens"] = torch.tensor(padded_ids(tok, tgt), dtype=torch.int64)
            alphas = eq = blend = None
            if mode == "replace":
                mapper = replacement_mapper(tok, src, tgt)
                refs[f"{name}.mapper"] = mapper
            else:
                mapper, alphas = refinement_mapper(tok, src, tgt)
                refs[f"{name}.mapper"] = mapper
                refs[f"{name}.alphas"] = alphas
            if "reweight" in case:
                eq = equalizer(tok, tgt, case["reweight"])
                refs[f"{name}.equalizer"] = eq
            if "blend" in case:
                blend = [sorted({p for w in case["blend"][k] for p in word_token_positions(tok, prompt, w)})
                         for k, prompt in (("source", src), ("target", tgt))]
            cross_steps = case.get("cross_steps", common["cross_steps"])
            if "cross_word_steps" in case:
                cross_steps = {"default_": cross_steps, **case["cross_word_steps"]}
            cross_alpha = cross_alpha_table(tok, tgt, steps, cross_steps)
            if "cross_word_steps" in case:
                refs[f"{name}.alpha"] = cross_alpha
            ctl = P2PController(
                steps=steps, layers_per_call=n_layers, mode=mode, mapper=mapper, alphas=alphas, equalizer=eq,
                cross_alpha=cross_alpha,
                self_steps=case.get("self_steps", common["self_steps"]), blend_positions=blend,
                blend_threshold=case.get("blend_threshold", common["blend_threshold"]),
                blend_start=case.get("blend_start", common["blend_start"]))
            out = sample_edit(unet, hook, ctl, uncond, encode(src), encode(tgt), x_t, steps, guidance)
            refs[f"{name}.latents"] = out

            ids_s = tok.encode(src)
            ids_t = tok.encode(tgt)
            print(f"\n[{name}] {mode}: {src!r} ({len(ids_s)} tokens {ids_s}) -> {tgt!r} ({len(ids_t)} tokens {ids_t})")
            if mode == "replace":
                nz = [(int(a), int(b), round(float(mapper[a, b]), 4)) for a, b in zip(*torch.nonzero(mapper).T)
                      if a != b or mapper[a, b] != 1]
                print(f"  mapper non-identity entries (row, col, w): {nz}")
            else:
                print(f"  mapper[:{len(ids_t) + 1}] {mapper[:len(ids_t) + 1].tolist()} "
                      f"alphas {alphas[:len(ids_t) + 1].tolist()}")
            if eq is not None:
                print(f"  equalizer != 1 at {torch.nonzero(eq != 1).flatten().tolist()}")
            if "cross_word_steps" in case:
                rows = {c: cross_alpha[:, c].nonzero().flatten().tolist() for c in (1, len(ids_t) - 2)}
                print(f"  cross_word_steps {case['cross_word_steps']}: alpha rows set, by column: {rows}")
            print(f"  source branch vs plain: rel {rel(out[:1], plain):.3e}  (vs plain explicit: "
                  f"{rel(out[:1], plain_explicit):.3e})")
            print(f"  target branch vs plain: rel {rel(out[1:], plain):.3e}")
            if blend is not None:
                mask = ctl.last_mask
                refs[f"{name}.mask"] = mask
                print(f"  blend positions {blend}; final mask: {int(mask.sum())}/{mask.numel()} ones")
                print("  " + "\n  ".join("".join("#" if v else "." for v in row) for row in mask.tolist()))
                outside = (1 - mask) * (out[1] - out[0])
                print(f"  max |x_tgt - x_src| outside the mask: {float(outside.abs().max()):.3e}")
        # each per-word-window case against the case that differs from it only by the per-word windows
        strip = lambda c: {k: v for k, v in c.items() if k not in ("name", "note", "cross_word_steps")}
        for case in [c for c in spec["cases"] if "cross_word_steps" in c]:
            for twin in [c for c in spec["cases"] if "cross_word_steps" not in c and strip(c) == strip(case)][:1]:
                a, b = refs[f"{case['name']}.latents"], refs[f"{twin['name']}.latents"]
                print(f"\n[{case['name']}] vs [{twin['name']}]: edit delta rel {rel(a[1] - a[0], b[1] - b[0]):.3e}, "
                      f"target branch rel {rel(a[1:], b[1:]):.3e}, source branch rel {rel(a[:1], b[:1]):.3e}")

    refs = {k: v.contiguous() for k, v in refs.items()}
    save_file(refs, OUT)
    print(f"\nwrote {OUT} ({OUT.stat().st_size} bytes, {len(refs)} tensors)")


if __name__ == "__main__":
    main()
