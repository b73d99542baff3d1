/**
 * The compute precision of a model (docs/performance.md, "Precision"): 'fp32' runs every op in fp32 on the
 * weights as stored; 'bf16' holds the GEMM weights as bf16 and runs the GEMMs on the CPU's bf16 engine
 * (activations rounded to bf16 at the GEMM inputs, fp32 accumulation; norms, softmax, the linear-attention
 * state and the scheduler stay fp32); 'auto' picks bf16 where the CPU has a bf16 engine and the checkpoint's
 * matrices are stored in 16 bits (as the released Sana weights are), else fp32.
 */
import type { BackendInfo } from '../backends/backend.js';
import { describeValue, SanaError } from '../errors.js';

export type Precision = 'fp32' | 'bf16';
export type PrecisionChoice = Precision | 'auto';
export const PRECISION_CHOICES: readonly PrecisionChoice[] = ['auto', 'fp32', 'bf16'];

/** The precision a model runs in and why (the CLI's summary line and `sana info` print it). */
export interface PrecisionDecision {
  precision: Precision;
  reason: string;
}

/** The kernel variants with bf16 dot products (AMX tiles, AVX-512-BF16). */
const BF16_ENGINES: Record<string, string> = { 'amx-bf16': 'AMX-BF16 tiles', avx512bf16: 'AVX-512-BF16' };

export function checkPrecision(value: unknown, option = 'precision'): PrecisionChoice {
  if (!PRECISION_CHOICES.includes(value as PrecisionChoice))
    throw new SanaError('ERR_SANA_INVALID_OPTION', `Expected one of ${PRECISION_CHOICES.join(', ')} for ${option} but received ${describeValue(value)}`);
  return value as PrecisionChoice;
}

/**
 * @param stored the storage dtypes of the model's GEMM matrices (safetensors names: F32, F16, BF16)
 * @param bf16Path false for a model that computes in fp32 in every precision (the DC-AE: docs/performance.md)
 */
export function choosePrecision(choice: PrecisionChoice, backend: Pick<BackendInfo, 'name' | 'variant'>, stored: Iterable<string>, bf16Path = true): PrecisionDecision {
  const engine = BF16_ENGINES[backend.variant];
  const dtypes = [...new Set(stored)];
  const sixteen = dtypes.length > 0 && dtypes.every((d) => d === 'BF16' || d === 'F16');
  if (!bf16Path) return { precision: 'fp32', reason: `${choice === 'bf16' ? 'requested bf16, but ' : ''}the DC-AE computes in fp32 (its Winograd fp32 convolutions outrun bf16 ones and keep fp32 accuracy)` };
  if (choice === 'fp32') return { precision: 'fp32', reason: 'requested' };
  if (choice === 'bf16')
    return { precision: 'bf16', reason: engine ? `requested; GEMMs on ${engine}` : `requested; the ${backend.name} variant ${backend.variant} has no bf16 engine: fp32 arithmetic on bf16 weights` };
  if (!engine) return { precision: 'fp32', reason: `auto: the ${backend.name} variant ${backend.variant} has no bf16 engine` };
  if (!sixteen) return { precision: 'fp32', reason: `auto: the checkpoint stores its matrices as ${dtypes.join('/') || 'nothing'} (bf16 compute is picked for 16-bit checkpoints)` };
  return { precision: 'bf16', reason: `auto: ${engine} and a ${dtypes.join('/')} checkpoint` };
}
