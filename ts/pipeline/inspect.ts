/** What a pipeline folder holds, from model_index.json, the configs and the safetensors headers only
 * (no tensor data is read): used by `sana info --model DIR`. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { ConfigReader } from '../io/config.js';
import { WeightStore } from '../io/weights.js';
import { readAutoencoderDcConfig } from '../models/dcae-config.js';
import { readGemma2Config } from '../models/gemma2.js';
import { readSanaTransformerConfig } from '../models/sana-transformer.js';
import { SCHEDULER_CLASSES } from '../schedulers/schedulers.js';
import { readModelIndex, type PipelineClass } from './components.js';

export interface ComponentSummary {
  name: string;
  className: string | null;
  config?: object;
  tensors?: number;
  parameters?: number;
  dtypes?: Record<string, number>;
}

export function inspectPipeline(dir: string, variant?: string): { pipeline: PipelineClass; components: ComponentSummary[]; warnings: string[] } {
  const { pipeline, classes, warnings } = readModelIndex(dir);
  const components: ComponentSummary[] = [];
  for (const [name, className] of Object.entries(classes)) {
    const sub = join(dir, name);
    const summary: ComponentSummary = { name, className };
    if (name === 'scheduler') {
      const cfg = ConfigReader.load(sub, 'scheduler_config.json');
      summary.config = SCHEDULER_CLASSES[className!].readConfig(cfg);
    } else if (name === 'tokenizer') {
      summary.config = { 'tokenizer.json': existsSync(join(sub, 'tokenizer.json')) };
    } else {
      const cfg = ConfigReader.load(sub);
      summary.config = name === 'transformer' ? readSanaTransformerConfig(cfg) : name === 'vae' ? readAutoencoderDcConfig(cfg) : readGemma2Config(cfg);
      const store = WeightStore.open(sub, name === 'text_encoder' ? 'model' : 'diffusion_pytorch_model', variant);
      try {
        summary.tensors = store.names().length;
        summary.parameters = 0;
        summary.dtypes = {};
        for (const n of store.names()) {
          const info = store.info(n)!;
          const count = info.shape.reduce((a, b) => a * b, 1);
          summary.parameters += count;
          summary.dtypes[info.dtype] = (summary.dtypes[info.dtype] ?? 0) + count;
        }
      } finally {
        store.close();
      }
    }
    components.push(summary);
  }
  return { pipeline, components, warnings };
}
