"""Trains the built-in demo model (a scaled-down Sana: DC-AE f16, Linear DiT, frozen random Gemma-2) on the
procedural shapes data and writes it as a diffusers folder. Reproducible: every step is seeded.

  python3 training/train_demo.py init  OUT       # configs, tokenizer, frozen text encoder, random init
  python3 training/train_demo.py ae    OUT       # autoencoder: reconstruction loss, then latent scaling factor
  node training/encode-captions.mjs OUT          # every caption through sana-node's own prompt encoder
  python3 training/train_demo.py dit   OUT       # DiT: flow matching (velocity target, logit-normal t, caption dropout)
  python3 training/train_demo.py smoke           # CI: a few steps of both on a fixed batch; loss must fall
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import safetensors_io as st  # noqa: E402
from sana_torch import AutoencoderDC, SanaTransformer2DModel  # noqa: E402
from shapes_data import ShapesDataset, all_captions  # noqa: E402

RES = 64
VAE_CONFIG = {
    '_class_name': 'AutoencoderDC', 'in_channels': 3, 'latent_channels': 32, 'attention_head_dim': 16,
    'encoder_block_types': ['ResBlock', 'ResBlock', 'ResBlock', 'EfficientViTBlock', 'ResBlock'],
    'decoder_block_types': ['ResBlock', 'ResBlock', 'ResBlock', 'EfficientViTBlock', 'ResBlock'],
    'encoder_block_out_channels': [16, 32, 64, 64, 64], 'decoder_block_out_channels': [16, 32, 64, 64, 64],
    'encoder_layers_per_block': [1, 1, 1, 1, 1], 'decoder_layers_per_block': [1, 1, 1, 1, 1],
    'encoder_qkv_multiscales': [[], [], [], [5], []], 'decoder_qkv_multiscales': [[], [], [], [5], []],
    'upsample_block_type': 'interpolate', 'downsample_block_type': 'conv', 'decoder_norm_types': 'rms_norm',
    'decoder_act_fns': 'silu', 'decoder_conv_act_fn': 'relu', 'encoder_out_shortcut': True,
    'decoder_in_shortcut': True, 'scaling_factor': 1.0,
}
TRANSFORMER_CONFIG = {
    '_class_name': 'SanaTransformer2DModel', 'in_channels': 32, 'out_channels': 32, 'num_attention_heads': 4,
    'attention_head_dim': 16, 'num_cross_attention_heads': 4, 'cross_attention_head_dim': 16,
    'cross_attention_dim': 64, 'caption_channels': 64, 'num_layers': 4, 'mlp_ratio': 2.5, 'patch_size': 1,
    'sample_size': 4, 'attention_bias': False, 'norm_elementwise_affine': False, 'norm_eps': 1e-6,
    'interpolation_scale': None, 'qk_norm': None, 'guidance_embeds': False, 'timestep_scale': 1.0, 'dropout': 0.0,
}
SPECIAL = ['<pad>', '<eos>', '<bos>', '<unk>']


def text_encoder_config(vocab):
    return {
        'architectures': ['Gemma2Model'], 'model_type': 'gemma2', 'vocab_size': vocab, 'hidden_size': 64,
        'intermediate_size': 128, 'num_hidden_layers': 2, 'num_attention_heads': 4, 'num_key_value_heads': 2,
        'head_dim': 16, 'query_pre_attn_scalar': 16, 'hidden_activation': 'gelu_pytorch_tanh',
        'attn_logit_softcapping': 50.0, 'final_logit_softcapping': 30.0, 'sliding_window': 4096,
        'max_position_embeddings': 8192, 'rms_norm_eps': 1e-6, 'rope_theta': 10000.0, 'attention_bias': False,
        'pad_token_id': 0, 'eos_token_id': 1, 'bos_token_id': 2, 'torch_dtype': 'float32',
    }


def complex_human_instruction():
    """Sana's CHI lines as sana-node prepends them (read from the built package: one copy of the text)."""
    js = "import('./dist/ts/index.js').then((m) => console.log(JSON.stringify(m.COMPLEX_HUMAN_INSTRUCTION)))"
    root = os.path.join(os.path.dirname(__file__), '..')
    return json.loads(subprocess.run(['node', '-e', js], cwd=root, check=True, capture_output=True, text=True).stdout)


def tokenizer_json(words, chi):
    """WordPiece over the caption words. The complex human instruction (written for Gemma-2-2B-it, which this
    model is not) is one added token, so the pipeline's default path works unchanged and costs one text token."""
    specials = SPECIAL + [chi]
    vocab = {t: i for i, t in enumerate(specials + words)}
    added = [{'id': i, 'content': t, 'single_word': False, 'lstrip': False, 'rstrip': False, 'normalized': False, 'special': True}
             for i, t in enumerate(specials)]
    bos = [{'SpecialToken': {'id': '<bos>', 'type_id': 0}}]
    return {
        'version': '1.0', 'truncation': None, 'padding': None, 'added_tokens': added,
        'normalizer': {'type': 'Lowercase'}, 'pre_tokenizer': {'type': 'BertPreTokenizer'},
        'post_processor': {'type': 'TemplateProcessing', 'single': bos + [{'Sequence': {'id': 'A', 'type_id': 0}}],
                           'pair': bos + [{'Sequence': {'id': 'A', 'type_id': 0}}, {'Sequence': {'id': 'B', 'type_id': 1}}],
                           'special_tokens': {'<bos>': {'id': '<bos>', 'ids': [vocab['<bos>']], 'tokens': ['<bos>']}}},
        'decoder': None,
        'model': {'type': 'WordPiece', 'unk_token': '<unk>', 'continuing_subword_prefix': '##', 'max_input_chars_per_word': 100, 'vocab': vocab},
    }


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f, indent=2)
        f.write('\n')


def gemma_weights(cfg, seed):
    """A fixed random Gemma-2 (the text encoder stays frozen: see training/README.md)."""
    g = torch.Generator().manual_seed(seed)
    D, I, hd = cfg['hidden_size'], cfg['intermediate_size'], cfg['head_dim']
    H, KV = cfg['num_attention_heads'], cfg['num_key_value_heads']
    w = {'embed_tokens.weight': torch.randn(cfg['vocab_size'], D, generator=g), 'norm.weight': torch.zeros(D)}
    lin = lambda o, i: torch.randn(o, i, generator=g) / math.sqrt(i)  # noqa: E731
    for l in range(cfg['num_hidden_layers']):
        p = f'layers.{l}.'
        w.update({p + 'self_attn.q_proj.weight': lin(H * hd, D), p + 'self_attn.k_proj.weight': lin(KV * hd, D),
                  p + 'self_attn.v_proj.weight': lin(KV * hd, D), p + 'self_attn.o_proj.weight': lin(D, H * hd),
                  p + 'mlp.gate_proj.weight': lin(I, D), p + 'mlp.up_proj.weight': lin(I, D), p + 'mlp.down_proj.weight': lin(D, I)})
        for n in ['input_layernorm', 'post_attention_layernorm', 'pre_feedforward_layernorm', 'post_feedforward_layernorm']:
            w[p + n + '.weight'] = torch.zeros(D)
    return w


def cmd_init(out):
    words = sorted({w for c in all_captions() for w in c.split()})
    write_json(f'{out}/tokenizer/tokenizer.json', tokenizer_json(words, '\n'.join(complex_human_instruction())))
    write_json(f'{out}/tokenizer/tokenizer_config.json', {'tokenizer_class': 'GemmaTokenizerFast', 'pad_token': '<pad>', 'bos_token': '<bos>', 'eos_token': '<eos>', 'unk_token': '<unk>', 'padding_side': 'right'})
    te = text_encoder_config(len(SPECIAL) + 1 + len(words))
    write_json(f'{out}/text_encoder/config.json', te)
    st.save(gemma_weights(te, seed=1), f'{out}/text_encoder/model.safetensors')
    write_json(f'{out}/scheduler/scheduler_config.json', {
        '_class_name': 'DPMSolverMultistepScheduler', 'num_train_timesteps': 1000, 'solver_order': 2,
        'prediction_type': 'flow_prediction', 'algorithm_type': 'dpmsolver++', 'solver_type': 'midpoint',
        'lower_order_final': True, 'final_sigmas_type': 'zero', 'use_flow_sigmas': True, 'flow_shift': 1.0,
        'timestep_spacing': 'linspace', 'steps_offset': 0, 'beta_schedule': 'linear', 'beta_start': 0.0001, 'beta_end': 0.02,
    })
    write_json(f'{out}/model_index.json', {
        '_class_name': 'SanaPipeline', 'scheduler': ['diffusers', 'DPMSolverMultistepScheduler'],
        'text_encoder': ['transformers', 'Gemma2Model'], 'tokenizer': ['transformers', 'GemmaTokenizerFast'],
        'transformer': ['diffusers', 'SanaTransformer2DModel'], 'vae': ['diffusers', 'AutoencoderDC'],
    })
    torch.manual_seed(2)
    save_module(AutoencoderDC(VAE_CONFIG), VAE_CONFIG, f'{out}/vae')
    torch.manual_seed(3)
    save_module(SanaTransformer2DModel(TRANSFORMER_CONFIG), TRANSFORMER_CONFIG, f'{out}/transformer')
    write_json(f'{out}/captions.json', all_captions())
    print(f'init: wrote {out}')


def save_module(model, cfg, folder):
    write_json(f'{folder}/config.json', cfg)
    st.save(model.state_dict(), f'{folder}/diffusion_pytorch_model.safetensors')


def load_module(cls, folder):
    cfg = json.load(open(f'{folder}/config.json'))
    m = cls(cfg)
    m.load_state_dict(st.load(f'{folder}/diffusion_pytorch_model.safetensors'), strict=True)
    return m, cfg


def train_ae(ae, next_batch, steps, lr, log_every=50):
    """Reconstruction training; `next_batch()` gives the images of each step."""
    opt = torch.optim.AdamW(ae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    losses = []
    for step in range(steps):
        x = next_batch()
        z = ae.encoder(x)
        rec = ae.decoder(z)
        loss = F.mse_loss(rec, x) + 0.1 * F.l1_loss(rec, x) + 1e-4 * z.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f'ae step {step}/{steps} loss {np.mean(losses[-log_every:]):.5f}', flush=True)
    return losses


def flow_loss(dit, x0, ctx, mask, gen):
    """Rectified-flow objective: x_t = (1 − σ)·x0 + σ·ε, target velocity ε − x0, σ uniform in (0, 1).
    Uniform rather than Sana's logit-normal: on a 4×4 latent the layout is decided at σ > 0.8, which
    logit-normal(0, 1) samples 8% of the time (training/README.md)."""
    eps = torch.randn(x0.shape, generator=gen)
    sigma = torch.rand(x0.shape[0], generator=gen)
    xt = (1 - sigma[:, None, None, None]) * x0 + sigma[:, None, None, None] * eps
    v = dit(xt, ctx, mask, sigma * 1000)
    return F.mse_loss(v, eps - x0)


def cmd_ae(out, steps, batch, seed):
    torch.manual_seed(seed)
    ae, cfg = load_module(AutoencoderDC, f'{out}/vae')
    t0 = time.time()
    data = ShapesDataset(RES, seed)
    losses = train_ae(ae, lambda: torch.from_numpy(data.batch(batch)[0]), steps, lr=1e-3)
    with torch.no_grad():
        x = torch.from_numpy(ShapesDataset(RES, seed + 1000).batch(256)[0])
        cfg['scaling_factor'] = float(1 / ae.encoder(x).std())
    save_module(ae, cfg, f'{out}/vae')
    print(f'ae: {steps} steps in {time.time() - t0:.0f} s, final loss {np.mean(losses[-50:]):.5f}, scaling_factor {cfg["scaling_factor"]:.4f}')


def cmd_dit(out, steps, batch, seed, save_every, dropout=0.1):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    ae, vcfg = load_module(AutoencoderDC, f'{out}/vae')
    dit, cfg = load_module(SanaTransformer2DModel, f'{out}/transformer')
    emb = st.load(f'{out}/caption-embeddings.safetensors')  # from training/encode-captions.mjs
    # the valid tokens come first and padded keys get exactly zero attention: train on the longest valid prefix
    L = int(emb['cond_mask'].sum(1).max())
    cond, cmask, uncond, umask = emb['cond'][:, :L], emb['cond_mask'][:, :L], emb['uncond'][:, :L], emb['uncond_mask'][:, :L]
    assert emb['cond_mask'][:, L:].sum() == 0 and emb['uncond_mask'][:, L:].sum() == 0
    data = ShapesDataset(RES, seed, hold_out=True)
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    losses, t0 = [], time.time()
    for step in range(steps):
        x, caps = data.batch(batch)
        with torch.no_grad():
            x0 = ae.encoder(torch.from_numpy(x)) * vcfg['scaling_factor']
        drop = torch.rand(batch, generator=gen) < dropout
        ctx = torch.where(drop[:, None, None], uncond[0][None], cond[caps])
        mask = torch.where(drop[:, None], umask[0][None], cmask[caps])
        loss = flow_loss(dit, x0, ctx, mask, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            print(f'dit step {step}/{steps} loss {np.mean(losses[-50:]):.5f}', flush=True)
        if save_every and (step + 1) % save_every == 0 and step + 1 < steps:
            save_module(dit, cfg, f'{out}/transformer-step{step + 1}')  # to look at while it trains
    save_module(dit, cfg, f'{out}/transformer')
    print(f'dit: {steps} steps in {time.time() - t0:.0f} s, final loss {np.mean(losses[-50:]):.5f}')


def cmd_smoke():
    """A few steps of both objectives on one fixed batch: the loss must fall (CI's check of the trainer)."""
    torch.manual_seed(0)
    x = torch.from_numpy(ShapesDataset(RES, 0).batch(8)[0])
    ae = AutoencoderDC(VAE_CONFIG)
    ae_losses = train_ae(ae, lambda: x, steps=30, lr=2e-3, log_every=0)
    dit = SanaTransformer2DModel(TRANSFORMER_CONFIG)
    with torch.no_grad():
        x0 = ae.encoder(x)
    ctx, mask = torch.randn(8, 7, 64), torch.ones(8, 7, dtype=torch.int64)
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-3)
    dit_losses = []
    for _ in range(30):
        loss = flow_loss(dit, x0, ctx, mask, torch.Generator().manual_seed(0))  # same noise: a fixed batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        dit_losses.append(loss.item())
    for name, l in [('ae', ae_losses), ('dit', dit_losses)]:
        print(f'smoke {name}: loss {l[0]:.4f} -> {l[-1]:.4f}')
        if not l[-1] < 0.7 * l[0]:
            raise SystemExit(f'FAIL smoke {name}: the loss did not fall ({l[0]:.4f} -> {l[-1]:.4f})')
    print('smoke ok')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('command', choices=['init', 'ae', 'dit', 'smoke'])
    ap.add_argument('out', nargs='?', help='the diffusers folder to write')
    ap.add_argument('--steps', type=int, default=None)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=os.cpu_count())
    ap.add_argument('--save-every', type=int, default=0, help='dit: also write transformer-stepN/ every N steps')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.command != 'smoke' and not a.out:
        ap.error(f'{a.command} needs the output folder')
    if a.command == 'init':
        cmd_init(a.out)
    elif a.command == 'ae':
        cmd_ae(a.out, a.steps or 600, a.batch, a.seed)
    elif a.command == 'dit':
        cmd_dit(a.out, a.steps or 12000, a.batch, a.seed, a.save_every)
    else:
        cmd_smoke()


main()
