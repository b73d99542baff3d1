/**
 * Prompt tokenisation as SanaPipeline does it (../shared/design/sana-spec.md §5.2): prompts lower-cased and
 * stripped, the complex human instruction (CHI) prepended, BOS added by the tokenizer's post-processor,
 * right truncation to c + max_sequence_length − 2 tokens (c = CHI tokens incl. BOS), then the text encoder
 * output keeps positions [0, −(N−1) … −1]. The negative prompt gets neither CHI nor selection.
 * Tokenizers come from tokenizer/tokenizer.json through @huggingface/tokenizers.
 */
import { basename, join } from 'node:path';

import { Tokenizer } from '@huggingface/tokenizers';

import { describeValue, SanaError } from '../errors.js';
import { entryKind, readTextFile } from '../io/files.js';

/** diffusers' default complex_human_instruction (data, verbatim). */
export const COMPLEX_HUMAN_INSTRUCTION: readonly string[] = [
  "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for image generation. Evaluate the level of detail in the user prompt:",
  '- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial relationships to create vivid and concrete scenes.',
  '- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.',
  'Here are examples of how to transform or refine prompts:',
  '- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.',
  '- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.',
  'Please generate only the enhanced description for the prompt below and avoid including any additional commentary or evaluations:',
  'User Prompt: ',
];

export interface TokenizedPrompts {
  /** token ids per prompt (BOS first), already truncated to maxLength, unpadded */
  ids: number[][];
  /** sequence length the text encoder runs at (padding to it is right padding) */
  maxLength: number;
  /** positions kept from the text encoder output; undefined = all */
  selectIndex?: number[];
  padTokenId: number;
}

/** Loads tokenizer/tokenizer.json (and tokenizer_config.json when present) of a pipeline folder. */
export function loadTokenizer(dir: string): Tokenizer {
  const file = join(dir, 'tokenizer.json');
  const read = (path: string) => {
    const text = readTextFile(path, `tokenizer/${basename(path)}`);
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new SanaError('ERR_SANA_MODEL_FORMAT', `${path}: cannot read the tokenizer (${(e as Error).message})`, { cause: e });
    }
  };
  const json = read(file);
  const configFile = join(dir, 'tokenizer_config.json');
  const config = entryKind(configFile, 'tokenizer/tokenizer_config.json') === 'missing' ? {} : read(configFile);
  try {
    return new Tokenizer(json, config);
  } catch (e) {
    throw new SanaError('ERR_SANA_MODEL_FORMAT', `${file}: unsupported tokenizer (${(e as Error).message})`, { cause: e });
  }
}

/** Token ids of a text; a tokenizer that cannot map part of it (no unk token) is an error, not a silent gap. */
function encodeIds(tok: Tokenizer, text: string): number[] {
  const ids: (number | undefined)[] = tok.encode(text).ids;
  if (!ids.every((id) => Number.isInteger(id))) {
    const unknown = tok.tokenize(text).filter((t: string) => tok.token_to_id(t) === undefined);
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected text the tokenizer can encode for prompt but received ${describeValue(text)} (no token id for ${describeValue(unknown.slice(0, 3).join(' '))})`);
  }
  return ids as number[];
}

function padId(tok: Tokenizer): number {
  const id = tok.token_to_id('<pad>');
  return id ?? 0;
}

/** Python's str.lower().strip() on a prompt. */
export function preprocessPrompt(prompt: string): string {
  return prompt.toLowerCase().trim();
}

/** The positive prompts: CHI + lower-cased prompt, truncation to c + max_sequence_length − 2, selection. */
export function tokenizePrompts(tok: Tokenizer, prompts: string[], opts: { maxSequenceLength?: number; complexHumanInstruction?: readonly string[] | null } = {}): TokenizedPrompts {
  const msl = opts.maxSequenceLength ?? 300;
  if (!Number.isInteger(msl) || msl < 2) throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected an integer >= 2 for maxSequenceLength but received ${describeValue(msl)}`);
  const chi = opts.complexHumanInstruction === undefined ? COMPLEX_HUMAN_INSTRUCTION : opts.complexHumanInstruction;
  let prefix = '';
  let maxLength = msl;
  let selectIndex: number[] | undefined;
  if (chi && chi.length > 0) {
    prefix = chi.join('\n');
    const c = encodeIds(tok, prefix).length;
    maxLength = c + msl - 2;
    selectIndex = [0, ...Array.from({ length: msl - 1 }, (_, i) => i - (msl - 1))];
  }
  const ids = prompts.map((p) => encodeIds(tok, prefix + preprocessPrompt(p)).slice(0, maxLength));
  return { ids, maxLength, selectIndex, padTokenId: padId(tok) };
}

/** The negative prompt(s): lower-cased, no CHI, no selection, padded/truncated to max_sequence_length. */
export function tokenizeNegative(tok: Tokenizer, prompts: string[], maxSequenceLength = 300): TokenizedPrompts {
  return { ids: prompts.map((p) => encodeIds(tok, preprocessPrompt(p)).slice(0, maxSequenceLength)), maxLength: maxSequenceLength, padTokenId: padId(tok) };
}
