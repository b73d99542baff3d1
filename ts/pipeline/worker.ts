/**
 * The piscina worker behind SanaPipeline: it holds one loaded SanaPipelineCore and runs load / generate /
 * dispose tasks, so generation never blocks the caller's event loop. Progress goes back on a MessagePort;
 * abort is a shared flag checked between steps. Errors travel as { error: { code, message } } because a
 * structured-cloned Error loses its `code`.
 */
import type { MessagePort } from 'node:worker_threads';

import { errorReply, SanaError } from '../errors.js';
import { SanaPipelineCore, type CoreLoadOptions, type GenerateOptions, type LoraAction, type ProgressEvent } from './pipeline-core.js';

export type WorkerTask =
  | { type: 'load'; dir: string; options: Omit<CoreLoadOptions, 'onProgress'>; port: MessagePort }
  | { type: 'generate'; prompt: string | string[]; options: Omit<GenerateOptions, 'signal' | 'onProgress'>; abort: SharedArrayBuffer; port: MessagePort }
  | { type: 'memory' }
  | { type: 'lora'; action: LoraAction }
  | { type: 'loras' }
  | { type: 'dispose' };

let pipe: SanaPipelineCore | null = null;

/** The last message on a task's progress port. */
export const END = { status: 'end' } as const;

export default async function run(task: WorkerTask): Promise<unknown> {
  try {
    switch (task.type) {
      case 'load': {
        pipe?.dispose();
        pipe = null;
        const send = (e: ProgressEvent) => task.port.postMessage(e);
        pipe = await SanaPipelineCore.fromPretrained(task.dir, { ...task.options, onProgress: send });
        return { warnings: pipe.warnings, backendInfo: pipe.backendInfo, precision: pipe.precision };
      }
      case 'generate': {
        if (!pipe) throw new SanaError('ERR_SANA_DISPOSED', 'the pipeline was disposed');
        const flag = new Int32Array(task.abort);
        const result = await pipe.generate(task.prompt, {
          ...task.options,
          signal: { get aborted() { return Atomics.load(flag, 0) === 1; } },
          onProgress: (e) => task.port.postMessage(e),
        });
        return { result: { ...result, images: result.images.map((i) => ({ width: i.width, height: i.height, data: i.data })) } };
      }
      case 'memory':
        if (!pipe) throw new SanaError('ERR_SANA_DISPOSED', 'the pipeline was disposed');
        return { memory: pipe.memory() };
      case 'lora':
        if (!pipe) throw new SanaError('ERR_SANA_DISPOSED', 'the pipeline was disposed');
        return { name: pipe.lora(task.action), loras: pipe.loras };
      case 'loras':
        if (!pipe) throw new SanaError('ERR_SANA_DISPOSED', 'the pipeline was disposed');
        return { loras: pipe.loras };
      case 'dispose':
        pipe?.dispose();
        pipe = null;
        return { disposed: true };
    }
  } catch (e) {
    return errorReply(e);
  } finally {
    if (task.type === 'load' || task.type === 'generate') {
      task.port.postMessage(END); // the caller waits for it: progress and the result travel on different channels
      task.port.close();
    }
  }
}
