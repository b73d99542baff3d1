"""Checks the PyTorch modules of training/ against ../shared/golden (the diffusers reference outputs): a state
dict loads with strict key and shape matching and reproduces the reference forward passes. Usage:
  python3 training/selftest.py [GOLDEN_DIR]"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import safetensors_io as st  # noqa: E402
from sana_torch import AutoencoderDC, SanaTransformer2DModel  # noqa: E402

GOLDEN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'golden')


def case(name):
    d = os.path.join(GOLDEN, name)
    cfg = json.load(open(os.path.join(d, 'config.json')))
    return cfg, st.load(os.path.join(d, 'diffusion_pytorch_model.safetensors')), st.load(os.path.join(d, 'inputs.safetensors')), st.load(os.path.join(d, 'outputs.safetensors'))


def check(label, got, want, tol):
    err = (got - want).abs().max().item() / max(want.abs().max().item(), 1e-6)
    print(f'{label}: max relative error {err:.2e}')
    if not err < tol:
        raise SystemExit(f'FAIL {label}: {err:.2e} >= {tol}')


@torch.no_grad()
def main():
    cfg, w, inp, out = case('dcae_tiny')
    ae = AutoencoderDC(cfg)
    ae.load_state_dict(w, strict=True)
    for hw in ['8x8', '6x10']:
        check(f'dcae decode {hw}', ae.decoder(inp[f'latent_{hw}']), out[f'decoded_{hw}'], 1e-4)
    for hw in ['64x64', '48x80']:
        check(f'dcae encode {hw}', ae.encoder(inp[f'image_{hw}']), out[f'encoded_{hw}'], 1e-4)

    cfg, w, inp, out = case('sana_transformer_tiny')
    dit = SanaTransformer2DModel(cfg)
    dit.load_state_dict(w, strict=True)
    for hw in ['8x8', '6x10']:
        got = dit(inp[f'hidden_states_{hw}'], inp['encoder_hidden_states'], inp['encoder_attention_mask'], inp['timestep'])
        check(f'transformer {hw}', got, out[f'sample_{hw}'], 1e-4)
    print('selftest ok')


main()
