"""Trainable PyTorch versions of the Sana modules the demo model uses, written from ../shared/design/sana-spec.md
with the exact diffusers parameter names, so a state_dict saves straight into a diffusers folder that
sana-node loads with its normal fromPretrained. Checked against ../shared/golden by training/selftest.py."""
import math

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm_channels(x, weight, bias, eps=1e-5):
    """RMSNorm over the channels of an NCHW tensor (DC-AE's RMSNorm2d)."""
    y = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + eps)
    return y * weight[None, :, None, None] + bias[None, :, None, None]


class ChannelRMSNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return rms_norm_channels(x, self.weight, self.bias)


def linear_attention(q, k, v, eps=1e-15):
    """ReLU linear attention; q, k, v [..., N, d]: out_n = Σ_m v_m (k_m·q_n) / (Σ_m k_m·q_n + eps)."""
    q, k = F.relu(q), F.relu(k)
    kv = torch.einsum('...nd,...ne->...de', k, v)
    num = torch.einsum('...nd,...de->...ne', q, kv)
    den = torch.einsum('...nd,...d->...n', q, k.sum(-2))
    return num / (den[..., None] + eps)


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.norm = ChannelRMSNorm(c)

    def forward(self, x):
        return x + self.norm(self.conv2(F.silu(self.conv1(x))))


class MultiscaleProj(nn.Module):
    def __init__(self, c, heads, k):
        super().__init__()
        self.proj_in = nn.Conv2d(3 * c, 3 * c, k, padding=k // 2, groups=3 * c, bias=False)
        self.proj_out = nn.Conv2d(3 * c, 3 * c, 1, groups=3 * heads, bias=False)

    def forward(self, x):
        return self.proj_out(self.proj_in(x))


class LiteMLA(nn.Module):
    def __init__(self, c, head_dim, scales):
        super().__init__()
        self.heads, self.head_dim = c // head_dim, head_dim
        self.to_q = nn.Linear(c, c, bias=False)
        self.to_k = nn.Linear(c, c, bias=False)
        self.to_v = nn.Linear(c, c, bias=False)
        self.to_qkv_multiscale = nn.ModuleList([MultiscaleProj(c, self.heads, k) for k in scales])
        self.to_out = nn.Linear(c * (1 + len(scales)), c, bias=False)
        self.norm_out = ChannelRMSNorm(c)

    def forward(self, x):
        B, C, H, W = x.shape
        w = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])[:, :, None, None]
        qkv = F.conv2d(x, w)
        z = torch.cat([qkv] + [m(qkv) for m in self.to_qkv_multiscale], 1)
        d = self.head_dim
        z = z.reshape(B, -1, 3 * d, H * W).transpose(-1, -2)  # groups of [q | k | v] per head
        out = linear_attention(z[..., :d], z[..., d:2 * d], z[..., 2 * d:])  # [B, G, HW, d]
        out = out.transpose(-1, -2).reshape(B, -1, H, W)
        y = F.conv2d(out, self.to_out.weight[:, :, None, None])
        return x + self.norm_out(y)


class GLUMBConv(nn.Module):
    """Mix-FFN; with `norm` (DC-AE flavour) it adds an RMSNorm2d and its own residual."""

    def __init__(self, c, hidden, norm):
        super().__init__()
        self.conv_inverted = nn.Conv2d(c, 2 * hidden, 1)
        self.conv_depth = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.conv_point = nn.Conv2d(hidden, c, 1, bias=False)
        self.norm = ChannelRMSNorm(c) if norm else None

    def forward(self, x):
        h = self.conv_depth(F.silu(self.conv_inverted(x)))
        a, g = h.chunk(2, 1)
        y = self.conv_point(a * F.silu(g))
        return x + self.norm(y) if self.norm is not None else y


class EfficientViTBlock(nn.Module):
    def __init__(self, c, head_dim, scales):
        super().__init__()
        self.attn = LiteMLA(c, head_dim, scales)
        self.conv_out = GLUMBConv(c, 4 * c, norm=True)

    def forward(self, x):
        return self.conv_out(self.attn(x))


class DownBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.group = cin * 4 // cout

    def forward(self, x):
        u = F.pixel_unshuffle(x, 2)
        B, C, H, W = u.shape
        return self.conv(x) + u.reshape(B, C // self.group, self.group, H, W).mean(2)


class UpBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.rep = cout * 4 // cin

    def forward(self, x):
        main = self.conv(F.interpolate(x, scale_factor=2, mode='nearest'))
        return main + F.pixel_shuffle(x.repeat_interleave(self.rep, 1), 2)


def make_block(kind, c, head_dim, scales):
    return ResBlock(c) if kind == 'ResBlock' else EfficientViTBlock(c, head_dim, scales)


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch = cfg['encoder_block_out_channels']
        self.latent = cfg['latent_channels']
        self.conv_in = nn.Conv2d(cfg['in_channels'], ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        for i, c in enumerate(ch):
            stage = [make_block(cfg['encoder_block_types'][i], c, cfg['attention_head_dim'], cfg['encoder_qkv_multiscales'][i])
                     for _ in range(cfg['encoder_layers_per_block'][i])]
            if i < len(ch) - 1:
                stage.append(DownBlock(c, ch[i + 1]))
            self.down_blocks.append(nn.Sequential(*stage))
        self.conv_out = nn.Conv2d(ch[-1], self.latent, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for stage in self.down_blocks:
            h = stage(h)
        B, C, H, W = h.shape
        return self.conv_out(h) + h.reshape(B, self.latent, C // self.latent, H, W).mean(2)


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch = cfg['decoder_block_out_channels']
        self.rep = ch[-1] // cfg['latent_channels']
        self.conv_in = nn.Conv2d(cfg['latent_channels'], ch[-1], 3, padding=1)
        self.up_blocks = nn.ModuleList()
        for i, c in enumerate(ch):
            stage = [UpBlock(ch[i + 1], c)] if i < len(ch) - 1 else []
            stage += [make_block(cfg['decoder_block_types'][i], c, cfg['attention_head_dim'], cfg['decoder_qkv_multiscales'][i])
                      for _ in range(cfg['decoder_layers_per_block'][i])]
            self.up_blocks.append(nn.Sequential(*stage))
        self.norm_out = ChannelRMSNorm(ch[0])
        self.conv_out = nn.Conv2d(ch[0], cfg['in_channels'], 3, padding=1)

    def forward(self, z):
        h = self.conv_in(z) + z.repeat_interleave(self.rep, 1)
        for stage in reversed(self.up_blocks):
            h = stage(h)
        return self.conv_out(F.relu(self.norm_out(h)))


class AutoencoderDC(nn.Module):
    """Sana's DC-AE with ResBlock/EfficientViT stages, conv downsampling and interpolating upsampling."""

    def __init__(self, cfg):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)


def timestep_sinusoid(t, dim=256):
    half = dim // 2
    freq = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    arg = t[:, None].float() * freq[None]
    return torch.cat([torch.cos(arg), torch.sin(arg)], -1)


class Mlp2(nn.Module):
    def __init__(self, cin, d, act):
        super().__init__()
        self.linear_1 = nn.Linear(cin, d)
        self.linear_2 = nn.Linear(d, d)
        self.act = act

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(x)))


class TimestepEmbed(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.timestep_embedder = Mlp2(256, d, F.silu)


class AdaLNSingle(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.emb = TimestepEmbed(d)
        self.linear = nn.Linear(d, 6 * d)

    def forward(self, t):
        emb = self.emb.timestep_embedder(timestep_sinusoid(t))
        return self.linear(F.silu(emb)), emb


class Proj(nn.Module):
    def __init__(self, cin, cout, bias):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1, bias=bias)


class Attention(nn.Module):
    def __init__(self, d, kv_dim, heads, head_dim, qkv_bias):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(d, inner, bias=qkv_bias)
        self.to_k = nn.Linear(kv_dim, inner, bias=qkv_bias)
        self.to_v = nn.Linear(kv_dim, inner, bias=qkv_bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, d)])

    def split(self, x):
        B, N, _ = x.shape
        return x.reshape(B, N, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, ctx=None, bias=None):
        q = self.split(self.to_q(x))
        if ctx is None:  # linear self-attention
            o = linear_attention(q, self.split(self.to_k(x)), self.split(self.to_v(x)))
        else:
            k, v = self.split(self.to_k(ctx)), self.split(self.to_v(ctx))
            s = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias[:, None, None, :]
            o = s.softmax(-1) @ v
        B, _, N, _ = o.shape
        return self.to_out[0](o.transpose(1, 2).reshape(B, N, -1))


class SanaBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg['num_attention_heads'] * cfg['attention_head_dim']
        self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d ** 0.5)
        self.attn1 = Attention(d, d, cfg['num_attention_heads'], cfg['attention_head_dim'], False)
        self.attn2 = Attention(d, d, cfg['num_cross_attention_heads'], cfg['cross_attention_head_dim'], True)
        self.ff = GLUMBConv(d, int(cfg['mlp_ratio'] * d), norm=False)

    def forward(self, x, ctx, bias, mod, h, w):
        B, N, D = x.shape
        sh_sa, sc_sa, g_sa, sh_ff, sc_ff, g_ff = (self.scale_shift_table[None] + mod.reshape(B, 6, D)).unbind(1)
        y = F.layer_norm(x, (D,), eps=1e-6) * (1 + sc_sa[:, None]) + sh_sa[:, None]
        x = x + g_sa[:, None] * self.attn1(y)
        x = x + self.attn2(x, ctx, bias)
        y = F.layer_norm(x, (D,), eps=1e-6) * (1 + sc_ff[:, None]) + sh_ff[:, None]
        z = self.ff(y.transpose(1, 2).reshape(B, D, h, w)).reshape(B, D, N).transpose(1, 2)
        return x + g_ff[:, None] * z


class SanaTransformer2DModel(nn.Module):
    """Linear DiT (patch size 1, no positional embedding, no qk-norm): predicts the flow velocity."""

    def __init__(self, cfg):
        super().__init__()
        assert cfg['patch_size'] == 1 and cfg.get('interpolation_scale') is None and cfg.get('qk_norm') is None
        d = cfg['num_attention_heads'] * cfg['attention_head_dim']
        self.patch_embed = Proj(cfg['in_channels'], d, True)
        self.time_embed = AdaLNSingle(d)
        self.caption_projection = Mlp2(cfg['caption_channels'], d, lambda x: F.gelu(x, approximate='tanh'))
        self.caption_norm = nn.Module()
        self.caption_norm.weight = nn.Parameter(torch.ones(d))
        self.transformer_blocks = nn.ModuleList([SanaBlock(cfg) for _ in range(cfg['num_layers'])])
        self.scale_shift_table = nn.Parameter(torch.randn(2, d) / d ** 0.5)
        self.proj_out = nn.Linear(d, cfg['out_channels'])

    def forward(self, x, ctx, mask, t):
        B, C, h, w = x.shape
        bias = (1 - mask.float()) * -10000.0
        X = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        mod, emb = self.time_embed(t)
        c = self.caption_projection(ctx)
        c = c * torch.rsqrt(c.pow(2).mean(-1, keepdim=True) + 1e-5) * self.caption_norm.weight
        for blk in self.transformer_blocks:
            X = blk(X, c, bias, mod, h, w)
        shift, scale = (self.scale_shift_table[None] + emb[:, None]).unbind(1)
        Y = F.layer_norm(X, (X.shape[-1],), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
        return self.proj_out(Y).transpose(1, 2).reshape(B, -1, h, w)
