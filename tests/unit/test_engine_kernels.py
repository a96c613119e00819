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
