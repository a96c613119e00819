"""The fast path's rearranged pieces compute what upstream's modules compute (CPU, fp32).

The GPU kernels themselves are checked in tests/gpu/; here the same ops run their PyTorch
fallback, and the weight rearrangements (fused q/k/v rows reordered for rotation by halves,
conv weights in tap-major layout) are checked against upstream's own modules.
"""

from __future__ import annotations

import pytest
import torch

from ishowttsd.engine import accel, kernels
from ishowttsd.engine.upstream import apply_rotary_pos_emb


def test_grouped_conv_matches_conv1d() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(128, 128, 31, groups=16, padding=15)
    x = torch.randn(2, 75, 128)
    w, b = kernels.conv_weight(conv)
    assert w.shape == (16, 31, 8, 8)
    with torch.no_grad():
        want = conv(x.transpose(1, 2)).transpose(1, 2)
        got = kernels.grouped_conv1d(x, w, b)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_conv_position_embedding_matches_upstream_with_mask() -> None:
    from f5_tts.model.modules import ConvPositionEmbedding

    torch.manual_seed(1)
    upstream = ConvPositionEmbedding(64, kernel_size=31, groups=16).eval()
    x = torch.randn(2, 90, 64)
    mask = torch.arange(90)[None, :] < 70
    convs = [m for m in upstream.conv1d if isinstance(m, torch.nn.Conv1d)]
    with torch.no_grad():
        want = upstream(x, mask=mask.expand(2, -1))
        got = kernels.conv_position_embedding([kernels.conv_weight(m) for m in convs], x, mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not got[:, 70:].any(), "padding stays zero"


@pytest.mark.parametrize("half_split", [True, False])
def test_rotation_keeps_upstream_attention_scores(half_split: bool) -> None:
    """Reordered q/k rows + halves rotation give upstream's q.k scores for every head."""
    from x_transformers.x_transformers import RotaryEmbedding

    torch.manual_seed(2)
    heads, d, n = 4, 16, 33
    rotary = RotaryEmbedding(d)

    class _Stub(torch.nn.Module):  # just what rope_tables reads from a DiT
        rotary_embed = rotary

    wq, wk = torch.randn(heads * d, 32), torch.randn(heads * d, 32)
    h = torch.randn(1, n, 32)
    freqs, _ = rotary.forward_from_seq_len(n)
    q_up = apply_rotary_pos_emb((h @ wq.T).view(1, n, heads, d).transpose(1, 2), freqs)
    k_up = apply_rotary_pos_emb((h @ wk.T).view(1, n, heads, d).transpose(1, 2), freqs)
    want = q_up @ k_up.transpose(-1, -2)
    order = accel._half_split_order(heads, d, d, torch.device("cpu")) if half_split else torch.arange(heads * d)
    rope = accel.rope_tables(_Stub(), n, half_split)
    q = accel._rotate((h @ wq[order].T).view(1, n, heads, d), rope, half_split).transpose(1, 2)
    k = accel._rotate((h @ wk[order].T).view(1, n, heads, d), rope, half_split).transpose(1, 2)
    torch.testing.assert_close(q @ k.transpose(-1, -2), want, rtol=1e-4, atol=1e-4)


def test_masked_attention_ignores_padded_keys() -> None:
    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 50, 4, 16) for _ in range(3))
    keys = accel._key_mask(torch.arange(50)[None, :] < 41, 2)
    got = accel.masked_attention(q, k, v, keys)
    k[:, 41:], v[:, 41:] = 9.0, -9.0
    torch.testing.assert_close(accel.masked_attention(q, k, v, keys), got)
    want = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k[:, :41].transpose(1, 2), v[:, :41].transpose(1, 2)
    ).transpose(1, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_validity_column_attention_ignores_padded_keys() -> None:
    """rotate_qkv's key column + unmasked attention = attention over the real keys only."""
    torch.manual_seed(4)
    g, n, heads, d, real = 2, 50, 4, 16, 41
    qkv = torch.randn(g, n, 3 * heads * d)
    angles = torch.randn(n, d // 2)
    angles = torch.cat((angles, angles), dim=-1)[None, :, None, :]
    cos, sin = angles.cos(), angles.sin()
    bias = accel.key_bias(torch.arange(n)[None, :] < real, g, torch.float32)
    assert bias[:, :real].eq(0).all() and bias[:, real:].eq(kernels.KEY_PAD_BIAS).all()
    q, k, v = kernels.rotate_qkv(qkv, cos, sin, heads, bias)
    assert q.shape == k.shape == (g, n, heads, 2 * d) and v.shape == (g, n, heads, d)
    assert q[..., d].eq(1).all() and not q[..., d + 1 :].any() and not k[..., d + 1 :].any()
    got = accel.column_attention(q, k, v)
    # the same q, k, v without the column, attending to the real keys only
    q0, k0, v0 = kernels.rotate_qkv(qkv, cos, sin, heads)
    torch.testing.assert_close(q0, q[..., :d])
    want = torch.nn.functional.scaled_dot_product_attention(
        q0.transpose(1, 2), k0[:, :real].transpose(1, 2), v0[:, :real].transpose(1, 2)
    ).transpose(1, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # whatever the padded frames hold, no real or padded query sees it
    noisy = qkv.clone()
    noisy[:, real:] = 50.0
    q2, k2, v2 = kernels.rotate_qkv(noisy, cos, sin, heads, bias)
    torch.testing.assert_close(accel.column_attention(q2, k2, v2)[:, :real], got[:, :real])


def test_feed_forward_plain_path_and_which_blocks_take_the_epilogue() -> None:
    """Which feed-forwards qualify for the epilogue; without it, upstream's module as it is.

    The epilogue itself is CUDA-only (the CPU's ``_addmm_activation`` applies the erf GELU,
    not the tanh form), so tests/gpu checks it against upstream.
    """
    from f5_tts.model.modules import FeedForward

    torch.manual_seed(5)
    ff = FeedForward(dim=32, mult=2, approximate="tanh").eval()

    class _Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ff = ff

    assert accel._tanh_gelu_ff(_Block())
    assert not accel._tanh_gelu_ff(type("B", (), {"ff": FeedForward(dim=32, approximate="none")})())
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        assert torch.equal(accel._feed_forward(ff, x, False), ff(x))


def test_rotate_qk_gives_rotate_qkvs_q_and_k() -> None:
    """For FlashAttention only q and k are written (as one (G, N, 2, H, d)); v stays in the
    projection's output, which it reads as a strided view."""
    torch.manual_seed(5)
    g, n, heads, d = 2, 30, 4, 16
    qkv = torch.randn(g, n, 3 * heads * d)
    angles = torch.randn(n, d // 2)
    angles = torch.cat((angles, angles), dim=-1)[None, :, None, :]
    pair = kernels.rotate_qk(qkv, angles.cos(), angles.sin(), heads)
    q, k, v = kernels.rotate_qkv(qkv, angles.cos(), angles.sin(), heads)
    assert pair.shape == (g, n, 2, heads, d)
    assert torch.equal(pair[:, :, 0], q) and torch.equal(pair[:, :, 1], k)
    assert not torch.equal(q, qkv.view(g, n, 3, heads, d)[:, :, 0])  # rotated
    assert torch.equal(v, qkv.view(g, n, 3, heads, d)[:, :, 2])
