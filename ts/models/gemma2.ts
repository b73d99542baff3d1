/**
 * Gemma2Model (transformers) returning last_hidden_state: the Sana text encoder. Formulas:
 * ../shared/design/sana-spec.md §6.3. Activations fp32; GQA, rotate-half RoPE, sliding window on even
 * layers, attention logit soft-cap before the mask, (1 + w) RMSNorms, GeGLU (tanh GELU), right padding.
 */
import { throwIfNonFinite, type Backend } from '../backends/backend.js';
import { SanaError } from '../errors.js';
import { ConfigReader } from '../io/config.js';
import { WeightStore } from '../io/weights.js';
import type { Tensor } from '../tensor/tensor.js';
import { view4 } from '../tensor/tensor.js';
import { Linear, RmsNorm, Scope, Weights } from './modules.js';
import type { LoadOptions, Params } from './params.js';
import type { Precision, PrecisionDecision } from './precision.js';
import type { Taps } from './sana-transformer.js';

export interface Gemma2Config {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  queryPreAttnScalar: number;
  slidingWindow: number | null;
  attnLogitSoftcapping: number | null;
}

export function readGemma2Config(cfg: ConfigReader): Gemma2Config {
  const arch = cfg.raw.architectures;
  const modelType = cfg.raw.model_type;
  if (modelType !== undefined && modelType !== 'gemma2') throw cfg.error('model_type', '"gemma2"', modelType);
  cfg.ignore('model_type');
  if (arch !== undefined) cfg.ignore('architectures');
  const c: Gemma2Config = {
    vocabSize: cfg.int('vocab_size', 256000, 1),
    hiddenSize: cfg.int('hidden_size', 2304, 1),
    intermediateSize: cfg.int('intermediate_size', 9216, 1),
    numHiddenLayers: cfg.count('num_hidden_layers', 26, 0),
    numAttentionHeads: cfg.int('num_attention_heads', 8, 1),
    numKeyValueHeads: cfg.int('num_key_value_heads', 4, 1),
    headDim: cfg.int('head_dim', 256, 2),
    rmsNormEps: cfg.number('rms_norm_eps', 1e-6, (v) => v > 0 && v < 1, 'a number in (0, 1)'),
    ropeTheta: cfg.number('rope_theta', 10000, (v) => v > 1, 'a number > 1'),
    queryPreAttnScalar: cfg.number('query_pre_attn_scalar', 256, (v) => v > 0, 'a positive number'),
    // Gemma2Config: sliding_window = 4096, attn_logit_softcapping = 50.0 (null turns either off)
    slidingWindow: cfg.nullableNumber('sliding_window', 4096, (v) => Number.isInteger(v) && v > 0, 'null or a positive integer'),
    attnLogitSoftcapping: cfg.nullableNumber('attn_logit_softcapping', 50),
  };
  // transformers reads hidden_activation (hidden_act is the legacy name); both must name the tanh GELU
  for (const key of ['hidden_activation', 'hidden_act']) {
    const v = cfg.raw[key];
    if (v !== undefined && v !== null) cfg.choice(key, ['gelu_pytorch_tanh'] as const);
  }
  if (c.numAttentionHeads % c.numKeyValueHeads !== 0)
    throw cfg.error('num_key_value_heads', `a divisor of num_attention_heads (${c.numAttentionHeads})`, c.numKeyValueHeads);
  if (c.headDim % 2 !== 0) throw cfg.error('head_dim', 'an even number (rotary embedding)', c.headDim);
  cfg.ignore('attention_bias', 'attention_dropout', 'bos_token_id', 'eos_token_id', 'pad_token_id', 'cache_implementation', 'final_logit_softcapping',
    'initializer_range', 'max_position_embeddings', 'torch_dtype', 'transformers_version', 'use_cache', 'tie_word_embeddings');
  if (cfg.raw.attention_bias === true) throw cfg.error('attention_bias', 'false (Gemma-2 projections have no bias)', true);
  return c;
}

/** One Gemma2DecoderLayer's weights. */
class GemmaLayer {
  readonly inputNorm: RmsNorm;
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly o: Linear;
  readonly postAttentionNorm: RmsNorm;
  readonly preFeedforwardNorm: RmsNorm;
  readonly gate: Linear;
  readonly up: Linear;
  readonly down: Linear;
  readonly postFeedforwardNorm: RmsNorm;

  constructor(w: Weights, pre: string, private readonly config: Gemma2Config) {
    const c = config;
    const H = c.hiddenSize;
    // the config values behind each shape, for mismatch messages
    const hidden = `hidden_size = ${H}`;
    const q = `${hidden}, num_attention_heads = ${c.numAttentionHeads}, head_dim = ${c.headDim}`;
    const kv = `${hidden}, num_key_value_heads = ${c.numKeyValueHeads}, head_dim = ${c.headDim}`;
    const mlp = `${hidden}, intermediate_size = ${c.intermediateSize}`;
    const norm = (name: string) => new RmsNorm(w, `${pre}${name}`, H, hidden, c.rmsNormEps, true);
    const proj = (name: string, out: number, inp: number, from: string) => Linear.declare(w, `${pre}${name}`, out, inp, from, { bias: false });
    this.inputNorm = norm('input_layernorm');
    this.q = proj('self_attn.q_proj', c.numAttentionHeads * c.headDim, H, q);
    this.k = proj('self_attn.k_proj', c.numKeyValueHeads * c.headDim, H, kv);
    this.v = proj('self_attn.v_proj', c.numKeyValueHeads * c.headDim, H, kv);
    this.o = proj('self_attn.o_proj', H, c.numAttentionHeads * c.headDim, q);
    this.postAttentionNorm = norm('post_attention_layernorm');
    this.preFeedforwardNorm = norm('pre_feedforward_layernorm');
    this.gate = proj('mlp.gate_proj', c.intermediateSize, H, mlp);
    this.up = proj('mlp.up_proj', c.intermediateSize, H, mlp);
    this.down = proj('mlp.down_proj', H, c.intermediateSize, mlp);
    this.postFeedforwardNorm = norm('post_feedforward_layernorm');
  }

  /** Layer `l` on the residual stream h [B, L, hidden]; returns the new stream (h is left to the caller). */
  forward(be: Backend, p: Params, l: number, h: Tensor, keyBias: Tensor, [B, L]: number[]): Tensor {
    const c = this.config;
    const scope = new Scope();
    const keep = <T extends Tensor>(t: T): T => scope.keep(t);
    try {
      const a = keep(this.inputNorm.forward(be, p, h));
      const [q, k, v] = [this.q, this.k, this.v].map((proj) => keep(proj.forward(be, p, a)));
      const qv = view4(q, [B, L, c.numAttentionHeads, c.headDim]); // [B, L, heads, headDim]
      const kv = view4(k, [B, L, c.numKeyValueHeads, c.headDim]);
      be.rope(qv, { theta: c.ropeTheta, out: qv }); // in place
      be.rope(kv, { theta: c.ropeTheta, out: kv });
      const sliding = l % 2 === 0 && c.slidingWindow !== null;
      const o = keep(be.attention(qv, kv, view4(v, [B, L, c.numKeyValueHeads, c.headDim]), {
        keyBias, scale: c.queryPreAttnScalar ** -0.5, softcap: c.attnLogitSoftcapping ?? 0, causal: true, window: sliding ? c.slidingWindow! : 0,
      }));
      const attn = keep(this.o.forward(be, p, o.reshape([B, L, c.numAttentionHeads * c.headDim])));
      const h1 = keep(be.residual(h, keep(this.postAttentionNorm.forward(be, p, attn))));
      const f = keep(this.preFeedforwardNorm.forward(be, p, h1));
      const gate = keep(this.gate.forward(be, p, f, { act: 'gelu-tanh' }));
      be.mul(gate, keep(this.up.forward(be, p, f)), gate);
      const down = keep(this.down.forward(be, p, gate));
      return be.residual(h1, keep(this.postFeedforwardNorm.forward(be, p, down)));
    } finally {
      scope.dispose();
    }
  }
}

/** The modules of a Gemma2Model config under a key prefix ("" or Gemma2ForCausalLM's "model."). */
class GemmaModules {
  readonly weights = new Weights();
  readonly embedTokens: string;
  readonly layers: GemmaLayer[];
  readonly norm: RmsNorm;

  constructor(c: Gemma2Config, prefix: string) {
    const w = this.weights;
    const hidden = `hidden_size = ${c.hiddenSize}`;
    this.embedTokens = w.matrix(`${prefix}embed_tokens.weight`, [c.vocabSize, c.hiddenSize], `vocab_size = ${c.vocabSize}, ${hidden}`);
    this.layers = Array.from({ length: c.numHiddenLayers }, (_, l) => new GemmaLayer(w, `${prefix}layers.${l}.`, c));
    this.norm = new RmsNorm(w, `${prefix}norm`, c.hiddenSize, hidden, c.rmsNormEps, true);
  }
}

export class Gemma2Model {
  private constructor(
    readonly backend: Backend,
    readonly config: Gemma2Config,
    private readonly m: GemmaModules,
    private readonly p: Params,
    readonly warnings: string[],
  ) {}

  static fromFolder(dir: string, backend: Backend, opts: LoadOptions = {}): Gemma2Model {
    const cfg = ConfigReader.load(dir, 'config.json', opts.configOverrides);
    const config = readGemma2Config(cfg);
    const store = WeightStore.open(dir, 'model', opts.variant);
    try {
      cfg.checkCounts(store.names().length, store.source);
      // Gemma2ForCausalLM checkpoints prefix every key with "model." and add a tied lm_head: accept both
      const prefix = store.info('embed_tokens.weight') ? '' : store.info('model.embed_tokens.weight') ? 'model.' : '';
      const modules = new GemmaModules(config, prefix);
      const params = modules.weights.load(backend, store, 'Gemma2Model', opts);
      return new Gemma2Model(backend, config, modules, params, params.warnings(cfg, ['lm_head.weight']));
    } finally {
      store.close();
    }
  }

  /** the precision this model runs in, and why */
  get precision(): PrecisionDecision {
    return this.p.precision;
  }

  /** Runs in `precision` until the returned function is called (Params.override). */
  overridePrecision(precision: Precision): () => void {
    return this.p.override(precision, 'Gemma2Model');
  }

  dispose(): void {
    this.p.dispose();
  }

  /** last_hidden_state [B, L, hidden] for token ids [B, L] with a right-padded attention mask (1 = token). */
  forward(inputIds: ArrayLike<number>, attentionMask: ArrayLike<number>, B: number, L: number, taps?: Taps): Float32Array {
    const be = this.backend;
    const c = this.config;
    const { m, p } = this;
    const Hd = c.hiddenSize;
    const run = new Scope();
    try {
      // embeddings × sqrt(hidden) (the normalizer is rounded to the activation dtype first), reading only the
      // rows of the ids in their stored dtype
      for (let i = 0; i < B * L; i++) {
        const id = inputIds[i];
        if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize)
          throw new SanaError('ERR_SANA_INVALID_ARGUMENT', `Gemma2Model: Expected token ids in [0, ${c.vocabSize}) for input_ids but received ${id} at position ${i}`);
      }
      const ids = run.keep(be.tensor([B * L], 'i32', inputIds));
      let Hs = run.keep(be.embedding(p.get(m.embedTokens), ids, { scale: Math.fround(Math.sqrt(Hd)) })).reshape([B, L, Hd]);
      taps?.('hidden_states.0', Hs.toFloat32(), [B, L, Hd]);
      const bias = new Float32Array(B * L);
      for (let i = 0; i < B * L; i++) bias[i] = Number(attentionMask[i]) ? 0 : -3.4028234663852886e38; // finfo(float32).min
      const keyBias = run.keep(be.tensor([B, L], 'f32', bias));

      m.layers.forEach((layer, l) => {
        const prev = Hs;
        Hs = run.keep(layer.forward(be, p, l, prev, keyBias, [B, L]));
        run.release(prev).dispose(); // the previous residual stream (the embeddings' alias first: a no-op)
        if (l < c.numHiddenLayers - 1) taps?.(`hidden_states.${l + 1}`, Hs.toFloat32(), [B, L, Hd]);
      });
      const last = run.keep(m.norm.forward(be, p, Hs));
      throwIfNonFinite(be, last, 'Gemma2Model produced non-finite values (NaN or Infinity): the weights or inputs hold NaN/Inf');
      const out = last.toFloat32();
      taps?.(`hidden_states.${c.numHiddenLayers}`, out, [B, L, Hd]);
      return out;
    } finally {
      run.dispose();
    }
  }
}
