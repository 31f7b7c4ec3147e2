"""An independent reference forward pass and path patching, for tests only.

Nothing here uses hooks or mechcheck's engine: :func:`manual_forward` re-implements the
forward of the tiny ``gpt2``, ``llama`` and ``neox`` models (see
:mod:`mechcheck.testing.models`) from their weights, one prompt at a time, with explicit
loops over layers and heads, so that every head's q, k, v, attention output and residual
contribution is an ordinary tensor that can be read or replaced.  Every architectural
choice (norm eps, activation, rotary base and fraction, parallel residual, attention
scaling, biases, head_dim) is read from the model's config.

:func:`reference_path_patch` builds path patching (Wang et al. 2022, App. B;
Goldowsky-Dill et al. 2023) out of three such forwards; :func:`reference_direct_logits`
computes a head's direct path to the logits algebraically, without a patched run.

Conventions: a head is ``(layer, head)``; an MLP sender is ``("mlp", layer)``; a receiver
is ``(layer, head, "q" | "k" | "v")`` or the string ``"logits"``.  Under grouped-query
attention the k and v of query head ``h`` are those of its kv group ``h // group``, and
replacing them replaces them for every query head of the group.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Trace",
    "manual_forward",
    "reference_direct_logits",
    "reference_edge_circuit",
    "reference_path_patch",
]


# --------------------------------------------------------------------------- weights

@dataclass
class _Layer:
    """One block's weights, every projection in ``x @ W + b`` form."""

    norm1: tuple[Tensor, Tensor | None]
    norm2: tuple[Tensor, Tensor | None]
    # per query head: q weight [d_model, d_head], bias [d_head] or None
    wq: list[tuple[Tensor, Tensor | None]]
    # per kv head
    wk: list[tuple[Tensor, Tensor | None]]
    wv: list[tuple[Tensor, Tensor | None]]
    # per query head: its rows of the output projection, [d_head, d_model]
    wo: list[Tensor]
    bo: Tensor | None
    mlp: dict[str, Tensor | None]


@dataclass
class _Spec:
    kind: str                 # "gpt2" | "llama" | "neox"
    n_heads: int
    n_kv_heads: int
    d_head: int
    norm: str                 # "layer" | "rms"
    eps: float
    act: str
    scaling: list[float]      # attention score scale, per layer
    rotary_dim: int           # 0: no rotary
    rotary_base: float
    parallel: bool
    embed: Tensor             # [vocab, d_model]
    pos_embed: Tensor | None  # [n_pos, d_model] (gpt2)
    final_norm: tuple[Tensor, Tensor | None]
    unembed: Tensor           # [vocab, d_model]
    unembed_bias: Tensor | None
    layers: list[_Layer] = field(default_factory=list)


def _linear(weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """nn.Linear stores [out, in]: return ``(W [in, out], b)``."""
    return weight.detach().T, None if bias is None else bias.detach()


def _norm_params(module: Any) -> tuple[Tensor, Tensor | None]:
    bias = getattr(module, "bias", None)
    return module.weight.detach(), None if bias is None else bias.detach()


def _kind(model: Any) -> str:
    name = type(model).__name__
    for prefix, kind in (("GPT2", "gpt2"), ("GPTNeoX", "neox"), ("Llama", "llama")):
        if name.startswith(prefix):
            return kind
    raise ValueError(f"reference_forward does not know {name}")


def _rope(cfg: Any, d_head: int) -> tuple[int, float]:
    params = dict(getattr(cfg, "rope_parameters", None) or {})
    if params.get("rope_type", "default") != "default":
        raise ValueError(f"only default rotary embeddings are implemented, not {params}")
    base = params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    fraction = params.get("partial_rotary_factor", getattr(cfg, "rotary_pct", 1.0))
    return int(d_head * fraction), float(base)


def _spec(model: Any) -> _Spec:
    """Read the weights afresh on every call (cheap), so edited or copied models work."""
    kind, cfg = _kind(model), model.config
    unembed = model.get_output_embeddings()
    ub = getattr(unembed, "bias", None)
    if kind == "gpt2":
        spec = _gpt2_spec(model, cfg)
    elif kind == "llama":
        spec = _llama_spec(model, cfg)
    else:
        spec = _neox_spec(model, cfg)
    spec.unembed = unembed.weight.detach()
    spec.unembed_bias = None if ub is None else ub.detach()
    return spec


def _gpt2_spec(model: Any, cfg: Any) -> _Spec:
    tr = model.transformer
    n, d = cfg.n_head, cfg.n_embd
    dh = d // n
    if getattr(cfg, "add_cross_attention", False):
        raise ValueError("cross-attention is not implemented")
    scaling = []
    for layer in range(cfg.n_layer):
        s = dh ** -0.5 if cfg.scale_attn_weights else 1.0
        if cfg.scale_attn_by_inverse_layer_idx:
            s /= float(layer + 1)
        scaling.append(s)
    spec = _Spec(kind="gpt2", n_heads=n, n_kv_heads=n, d_head=dh, norm="layer",
                 eps=cfg.layer_norm_epsilon, act=cfg.activation_function, scaling=scaling,
                 rotary_dim=0, rotary_base=0.0, parallel=False,
                 embed=tr.wte.weight.detach(), pos_embed=tr.wpe.weight.detach(),
                 final_norm=_norm_params(tr.ln_f), unembed=None, unembed_bias=None)  # type: ignore[arg-type]
    for block in tr.h:
        w = block.attn.c_attn.weight.detach()  # Conv1D: [in, out], out = [all q | all k | all v]
        b = block.attn.c_attn.bias.detach()

        def piece(which: int, h: int, w: Tensor = w, b: Tensor = b) -> tuple[Tensor, Tensor]:
            cols = slice(which * d + h * dh, which * d + (h + 1) * dh)
            return w[:, cols], b[cols]

        wo = block.attn.c_proj.weight.detach()  # [in, out]
        spec.layers.append(_Layer(
            norm1=_norm_params(block.ln_1), norm2=_norm_params(block.ln_2),
            wq=[piece(0, h) for h in range(n)], wk=[piece(1, h) for h in range(n)],
            wv=[piece(2, h) for h in range(n)],
            wo=[wo[h * dh:(h + 1) * dh, :] for h in range(n)],
            bo=block.attn.c_proj.bias.detach(),
            mlp={"w_in": block.mlp.c_fc.weight.detach(), "b_in": block.mlp.c_fc.bias.detach(),
                 "w_out": block.mlp.c_proj.weight.detach(),
                 "b_out": block.mlp.c_proj.bias.detach()}))
    return spec


def _llama_spec(model: Any, cfg: Any) -> _Spec:
    base = model.model
    n, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // n
    rot, theta = _rope(cfg, dh)
    spec = _Spec(kind="llama", n_heads=n, n_kv_heads=kv, d_head=dh, norm="rms",
                 eps=cfg.rms_norm_eps, act=cfg.hidden_act,
                 scaling=[dh ** -0.5] * cfg.num_hidden_layers, rotary_dim=rot,
                 rotary_base=theta, parallel=False, embed=base.embed_tokens.weight.detach(),
                 pos_embed=None, final_norm=_norm_params(base.norm), unembed=None,  # type: ignore[arg-type]
                 unembed_bias=None)
    for block in base.layers:
        att, mlp = block.self_attn, block.mlp

        def heads(proj: Any, count: int) -> list[tuple[Tensor, Tensor | None]]:
            w, b = _linear(proj.weight, proj.bias if cfg.attention_bias else None)
            return [(w[:, h * dh:(h + 1) * dh], None if b is None else b[h * dh:(h + 1) * dh])
                    for h in range(count)]

        wo, bo = _linear(att.o_proj.weight, att.o_proj.bias if cfg.attention_bias else None)
        gate = _linear(mlp.gate_proj.weight, mlp.gate_proj.bias if cfg.mlp_bias else None)
        up = _linear(mlp.up_proj.weight, mlp.up_proj.bias if cfg.mlp_bias else None)
        down = _linear(mlp.down_proj.weight, mlp.down_proj.bias if cfg.mlp_bias else None)
        spec.layers.append(_Layer(
            norm1=_norm_params(block.input_layernorm),
            norm2=_norm_params(block.post_attention_layernorm),
            wq=heads(att.q_proj, n), wk=heads(att.k_proj, kv), wv=heads(att.v_proj, kv),
            wo=[wo[h * dh:(h + 1) * dh, :] for h in range(n)], bo=bo,
            mlp={"w_gate": gate[0], "b_gate": gate[1], "w_in": up[0], "b_in": up[1],
                 "w_out": down[0], "b_out": down[1]}))
    return spec


def _neox_spec(model: Any, cfg: Any) -> _Spec:
    base = model.gpt_neox
    n = cfg.num_attention_heads
    dh = cfg.hidden_size // n
    rot, theta = _rope(cfg, dh)
    bias = getattr(cfg, "attention_bias", True)
    spec = _Spec(kind="neox", n_heads=n, n_kv_heads=n, d_head=dh, norm="layer",
                 eps=cfg.layer_norm_eps, act=cfg.hidden_act,
                 scaling=[dh ** -0.5] * cfg.num_hidden_layers, rotary_dim=rot,
                 rotary_base=theta, parallel=bool(cfg.use_parallel_residual),
                 embed=base.embed_in.weight.detach(), pos_embed=None,
                 final_norm=_norm_params(base.final_layer_norm), unembed=None,  # type: ignore[arg-type]
                 unembed_bias=None)
    for block in base.layers:
        att = block.attention
        # Linear [3d, d]; output features: per head [q_h | k_h | v_h]
        w, b = _linear(att.query_key_value.weight, att.query_key_value.bias if bias else None)

        def piece(which: int, h: int, w: Tensor = w,
                  b: Tensor | None = b) -> tuple[Tensor, Tensor | None]:
            cols = slice(h * 3 * dh + which * dh, h * 3 * dh + (which + 1) * dh)
            return w[:, cols], None if b is None else b[cols]

        wo, bo = _linear(att.dense.weight, att.dense.bias if bias else None)
        w_in, b_in = _linear(block.mlp.dense_h_to_4h.weight, block.mlp.dense_h_to_4h.bias)
        w_out, b_out = _linear(block.mlp.dense_4h_to_h.weight, block.mlp.dense_4h_to_h.bias)
        spec.layers.append(_Layer(
            norm1=_norm_params(block.input_layernorm),
            norm2=_norm_params(block.post_attention_layernorm),
            wq=[piece(0, h) for h in range(n)], wk=[piece(1, h) for h in range(n)],
            wv=[piece(2, h) for h in range(n)],
            wo=[wo[h * dh:(h + 1) * dh, :] for h in range(n)], bo=bo,
            mlp={"w_in": w_in, "b_in": b_in, "w_out": w_out, "b_out": b_out}))
    return spec


# --------------------------------------------------------------------------- pieces

def _affine(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    y = x @ w
    return y if b is None else y + b


def _norm(spec: _Spec, x: Tensor, params: tuple[Tensor, Tensor | None]) -> Tensor:
    weight, bias = params
    if spec.norm == "rms":
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + spec.eps)
    else:
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)  # biased, as LayerNorm
        y = (x - mean) / torch.sqrt(var + spec.eps)
    y = y * weight
    return y if bias is None else y + bias


def _activation(name: str, x: Tensor) -> Tensor:
    if name == "gelu":  # exact, erf form
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if name in ("silu", "swish"):
        return x * torch.sigmoid(x)
    if name == "relu":
        return torch.clamp(x, min=0)
    raise ValueError(f"activation {name!r} is not implemented")


def _mlp(spec: _Spec, layer: _Layer, x: Tensor) -> Tensor:
    m = layer.mlp
    hidden = _affine(x, m["w_in"], m["b_in"])  # type: ignore[arg-type]
    if "w_gate" in m:  # SwiGLU: act(gate(x)) * up(x)
        hidden = _activation(spec.act, _affine(x, m["w_gate"], m["b_gate"])) * hidden  # type: ignore[arg-type]
    else:
        hidden = _activation(spec.act, hidden)
    return _affine(hidden, m["w_out"], m["b_out"])  # type: ignore[arg-type]


def _rotate(spec: _Spec, x: Tensor) -> Tensor:
    """Rotary embedding on the first ``rotary_dim`` features of ``x`` [pos, d_head]."""
    r = spec.rotary_dim
    if r == 0:
        return x
    pos = torch.arange(x.shape[0], dtype=torch.float32)
    inv_freq = 1.0 / (spec.rotary_base ** (torch.arange(0, r, 2, dtype=torch.float32) / r))
    angles = torch.outer(pos, inv_freq)                  # [pos, r/2]
    angles = torch.cat([angles, angles], dim=-1)         # [pos, r]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    rot, rest = x[:, :r], x[:, r:]
    half = r // 2
    rotated_half = torch.cat([-rot[:, half:], rot[:, :half]], dim=-1)
    return torch.cat([rot * cos + rotated_half * sin, rest], dim=-1)


def _attend(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Causal softmax attention of one head: ``[pos, d_head]`` each."""
    scores = (q @ k.T) * scale
    n = q.shape[0]
    future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v


# --------------------------------------------------------------------------- forward

@dataclass
class Trace:
    """Everything one forward computed, per layer (one prompt, no batch axis)."""

    head_z: dict[tuple[int, int], Tensor]    # (layer, head) -> [pos, d_head] before W_O
    head_out: dict[tuple[int, int], Tensor]  # (layer, head) -> [pos, d_model], no bias
    q: dict[tuple[int, int], Tensor]         # (layer, head) -> [pos, d_head], pre-rotary
    k: dict[tuple[int, int], Tensor]         # GQA: the head's kv group's
    v: dict[tuple[int, int], Tensor]
    mlp_out: dict[int, Tensor]               # layer -> [pos, d_model]
    attn_out: dict[int, Tensor]              # layer -> [pos, d_model]: sum of head_out + bias
    resid_pre: dict[int, Tensor]             # layer -> [pos, d_model]: the block's input
    resid_final: Tensor                      # [pos, d_model]: before the final norm
    logits: Tensor                           # [pos, vocab]


def _unembed(spec: _Spec, resid: Tensor) -> Tensor:
    return _affine(_norm(spec, resid, spec.final_norm), spec.unembed.T, spec.unembed_bias)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Many tiny matmuls: a thread pool only adds hand-off latency (and, on a busy
    machine, waits for a descheduled worker), so run them on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def manual_forward(model: Any, ids: Sequence[int], *,
                   head_z: dict[tuple[int, int], Tensor] | None = None,
                   q: dict[tuple[int, int], Tensor] | None = None,
                   k: dict[tuple[int, int], Tensor] | None = None,
                   v: dict[tuple[int, int], Tensor] | None = None,
                   mlp_out: dict[int, Tensor] | None = None) -> Trace:
    """The model's forward on one prompt, computed by hand.

    Each override maps ``(layer, head)`` (``layer`` for ``mlp_out``) to a full tensor that
    replaces the computed value; everything downstream is recomputed from it.  q, k, v
    overrides replace the pre-rotary projection output (k, v of a query head: its kv
    group's, for every head of the group); a ``head_z`` override replaces the attention
    output before W_O.  The trace records q, k, v after their overrides and ``head_z``,
    ``mlp_out`` after theirs.
    """
    with torch.no_grad(), _one_thread():
        return _forward(model, ids, head_z=head_z, q=q, k=k, v=v, mlp_out=mlp_out)


def _forward(model: Any, ids: Sequence[int], *, head_z: Any, q: Any, k: Any, v: Any,
             mlp_out: Any) -> Trace:
    spec = _spec(model)
    head_z, q, k, v, mlp_out = (head_z or {}), (q or {}), (k or {}), (v or {}), (mlp_out or {})
    group = spec.n_heads // spec.n_kv_heads
    ids_t = torch.as_tensor(list(ids), dtype=torch.long)
    pos = ids_t.shape[0]
    resid = spec.embed[ids_t]
    if spec.pos_embed is not None:
        resid = resid + spec.pos_embed[:pos]
    tr = Trace({}, {}, {}, {}, {}, {}, {}, {}, resid, resid)  # last two filled below
    for li, layer in enumerate(spec.layers):
        tr.resid_pre[li] = resid
        x = _norm(spec, resid, layer.norm1)
        # keys and values per kv head (overrides name any query head of the group)
        ks, vs = [], []
        for g in range(spec.n_kv_heads):
            kg, vg = _affine(x, *layer.wk[g]), _affine(x, *layer.wv[g])
            for h in range(g * group, (g + 1) * group):
                kg = k.get((li, h), kg)
                vg = v.get((li, h), vg)
            ks.append(kg)
            vs.append(vg)
        attn = torch.zeros_like(resid)
        for h in range(spec.n_heads):
            qh = q.get((li, h), _affine(x, *layer.wq[h]))
            kh, vh = ks[h // group], vs[h // group]
            tr.q[li, h], tr.k[li, h], tr.v[li, h] = qh, kh, vh
            z = _attend(_rotate(spec, qh), _rotate(spec, kh), vh, spec.scaling[li])
            z = head_z.get((li, h), z)
            tr.head_z[li, h] = z
            tr.head_out[li, h] = z @ layer.wo[h]
            attn = attn + tr.head_out[li, h]
        if layer.bo is not None:
            attn = attn + layer.bo
        tr.attn_out[li] = attn
        if spec.parallel:
            mlp = _mlp(spec, layer, _norm(spec, resid, layer.norm2))
            mlp = mlp_out.get(li, mlp)
            resid = resid + attn + mlp
        else:
            resid = resid + attn
            mlp = _mlp(spec, layer, _norm(spec, resid, layer.norm2))
            mlp = mlp_out.get(li, mlp)
            resid = resid + mlp
        tr.mlp_out[li] = mlp
    tr.resid_final = resid
    tr.logits = _unembed(spec, resid)
    return tr


# --------------------------------------------------------------------------- path patching

Sender = tuple[Any, int]
Receiver = tuple[int, int, str]


def _positions(at: Sequence[int] | None, pos: int) -> Tensor:
    mask = torch.zeros(pos, dtype=torch.bool)
    if at is None:
        mask[:] = True
    else:
        for p in at:
            if not -pos <= p < pos:
                raise IndexError(f"position {p} outside a prompt of {pos} tokens")
            mask[p] = True
    return mask


def _mix(base: Tensor, source: Tensor, where: Tensor) -> Tensor:
    return torch.where(where[:, None], source, base)


def _is_mlp(sender: Sender) -> bool:
    return sender[0] == "mlp"


def reference_path_patch(model: Any, base_ids: Sequence[int], source_ids: Sequence[int],
                         senders: Sequence[Sender], receivers: Sequence[Receiver] | str,
                         freeze: str = "heads", at: Sequence[int] | None = None) -> Tensor:
    """Path patching from ``senders`` to ``receivers`` on one prompt pair: last-position
    logits ``[vocab]`` of the final run.

    Run 2 (on ``base_ids``): senders take their source values (at positions ``at``, all
    when None); every other head is frozen to its base ``head_z``; non-sender MLPs are
    recomputed (``freeze="heads"``) or frozen to base (``"heads_and_mlps"``).  Run 3 (on
    ``base_ids``): only the receivers' q/k/v are replaced by run 2's; its logits are
    returned.  ``receivers="logits"``: run 2 with every non-sender head and MLP frozen,
    whatever ``freeze`` says; its logits are returned.
    """
    if freeze not in ("heads", "heads_and_mlps"):
        raise ValueError(f"freeze must be 'heads' or 'heads_and_mlps', not {freeze!r}")
    if len(base_ids) != len(source_ids):
        raise ValueError("base and source prompts must have the same length")
    spec = _spec(model)
    base, source = manual_forward(model, base_ids), manual_forward(model, source_ids)
    where = _positions(at, len(base_ids))
    head_senders = {(int(s[0]), int(s[1])) for s in senders if not _is_mlp(s)}
    mlp_senders = {int(s[1]) for s in senders if _is_mlp(s)}
    for li, h in head_senders:
        if not (0 <= li < len(spec.layers) and 0 <= h < spec.n_heads):
            raise ValueError(f"no head {(li, h)}")
    freeze_mlps = receivers == "logits" or freeze == "heads_and_mlps"

    z_over: dict[tuple[int, int], Tensor] = {}
    for key, z in base.head_z.items():
        z_over[key] = _mix(z, source.head_z[key], where) if key in head_senders else z
    mlp_over: dict[int, Tensor] = {}
    for li, out in base.mlp_out.items():
        if li in mlp_senders:
            mlp_over[li] = _mix(out, source.mlp_out[li], where)
        elif freeze_mlps:
            mlp_over[li] = out
    run2 = manual_forward(model, base_ids, head_z=z_over, mlp_out=mlp_over)
    if receivers == "logits":
        return run2.logits[-1]

    over: dict[str, dict[tuple[int, int], Tensor]] = {"q": {}, "k": {}, "v": {}}
    assert not isinstance(receivers, str), receivers
    for li, h, site in receivers:
        over[site][li, h] = getattr(run2, site)[li, h]
    run3 = manual_forward(model, base_ids, q=over["q"], k=over["k"], v=over["v"])
    return run3.logits[-1]


def reference_direct_logits(model: Any, base_ids: Sequence[int], source_ids: Sequence[int],
                            head: tuple[int, int]) -> Tensor:
    """A head's direct path to the logits, algebraically: the base final residual plus
    (source − base) head output, through the final norm and unembedding, last position."""
    spec = _spec(model)
    base, source = manual_forward(model, base_ids), manual_forward(model, source_ids)
    resid = base.resid_final + (source.head_out[head] - base.head_out[head])
    with torch.no_grad():
        return _unembed(spec, resid)[-1]


# --------------------------------------------------------------------------- edge circuits

Head = tuple[int, int]
Edge = tuple[Head, Any]  # (sender head, (layer, head, "q" | "k" | "v") or "logits")


def _check_edges(spec: _Spec, edges: Any) -> set[Edge]:
    """Normalize ``edges`` to a set of ``((layer, head), receiver)`` and validate them."""
    out: set[Edge] = set()
    n_layers = len(spec.layers)

    def head_ok(li: int, h: int) -> bool:
        return 0 <= li < n_layers and 0 <= h < spec.n_heads

    for sender, receiver in edges:
        s = (int(sender[0]), int(sender[1]))
        if not head_ok(*s):
            raise ValueError(f"no head {s}")
        if receiver == "logits":
            out.add((s, "logits"))
            continue
        li, h, site = int(receiver[0]), int(receiver[1]), str(receiver[2])
        if site not in ("q", "k", "v") or not head_ok(li, h):
            raise ValueError(f"no receiver {receiver!r}")
        if li <= s[0]:
            raise ValueError(f"edge {s} -> {receiver!r}: a receiver must be in a later layer")
        out.add((s, (li, h, site)))
    return out


def reference_edge_circuit(model: Any, ids: Sequence[int], edges: Any,
                           ablated_z: dict[tuple[int, int], Tensor]) -> Tensor:
    """An edge-level circuit (ACDC; edge attribution patching) on one prompt:
    last-position logits ``[vocab]``.

    ``edges``: pairs ``(sender, receiver)``, sender ``(layer, head)``, receiver
    ``(layer, head, "q" | "k" | "v")`` or ``"logits"``.  The circuit heads are every head
    named by an edge (as sender or as receiver).  ``ablated_z``: ``(layer, head) ->
    [pos, d_head]``, each head's ablated attention output before W_O.

    * A head outside the circuit has its z replaced by ``ablated_z`` (node ablation).
    * MLPs, embeddings and biases are never gated: recomputed on the actual residual.
    * Input ``i`` of circuit head ``r`` in layer ``L`` reads
      ``resid_pre[L] - sum(delta_s)`` over circuit heads ``s`` of layers ``< L`` with no
      edge ``s -> (L, r, i)``, where ``delta_s = (z_s - ablated_z[s]) @ W_O[s]`` and
      ``z_s`` is ``s``'s actual z in this run; its q/k/v is that residual through the
      layer's attention-input norm and the head's projection (pre-rotary).  Under GQA a
      k/v override sets its kv group's (the last overridden query head of a group wins).
      An input with no removed sender keeps its own computed value.
    * The logits read ``resid_final - sum(delta_s)`` over circuit heads ``s`` with no edge
      ``s -> logits``, through the final norm and the unembedding.

    Computed layer by layer: the overrides of layer ``L`` are computed from a forward that
    already has those of every earlier layer (layer 0 has no upstream heads).
    """
    spec = _spec(model)
    edge_set = _check_edges(spec, edges)
    circuit: set[Head] = set()
    for s, r in edge_set:
        circuit.add(s)
        if r != "logits":
            circuit.add((r[0], r[1]))
    z_over = {key: ablated_z[key] for key in
              ((li, h) for li in range(len(spec.layers)) for h in range(spec.n_heads))
              if key not in circuit}
    over: dict[str, dict[Head, Tensor]] = {"q": {}, "k": {}, "v": {}}
    group = spec.n_heads // spec.n_kv_heads

    def deltas(trace: Trace, heads: Sequence[Head]) -> Tensor:
        """Sum over ``heads`` of (actual - ablated) z through the head's W_O rows."""
        total = torch.zeros_like(trace.resid_final)
        for s in heads:
            wo = spec.layers[s[0]].wo[s[1]]
            total = total + (trace.head_z[s] @ wo - ablated_z[s] @ wo)
        return total

    def forward() -> Trace:
        return manual_forward(model, ids, head_z=z_over, q=over["q"], k=over["k"],
                              v=over["v"])

    with torch.no_grad(), _one_thread():
        for li in range(1, len(spec.layers)):
            trace = forward()
            layer = spec.layers[li]
            upstream = sorted(s for s in circuit if s[0] < li)
            for h in range(spec.n_heads):
                if (li, h) not in circuit:
                    # ablated: its q/k/v are unused (and, under GQA, must not override
                    # its group's k/v)
                    continue
                for site in ("q", "k", "v"):
                    removed = [s for s in upstream if (s, (li, h, site)) not in edge_set]
                    if not removed:
                        continue
                    x = trace.resid_pre[li] - deltas(trace, removed)
                    weights = (layer.wq[h] if site == "q" else
                               getattr(layer, f"w{site}")[h // group])  # k, v: kv group
                    over[site][li, h] = _affine(_norm(spec, x, layer.norm1), *weights)
        final = forward()
        removed = sorted(s for s in circuit if (s, "logits") not in edge_set)
        return _unembed(spec, final.resid_final - deltas(final, removed))[-1]
