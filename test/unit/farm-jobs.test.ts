// The render farm's job ids: deterministic (a resubmission adds nothing), distinct per image and per option
// set, valid as BullMQ ids (no ':', not an integer), and the image names those of a local render.
import { describe, expect, it } from 'vitest';

import { batchJobs, checkBatchName } from '../../ts/farm/queue.js';

const prompts = [{ prompt: 'a red circle' }, { prompt: 'a blue square', seed: 7 }, { prompt: 'a red circle' }];

describe('batch jobs', () => {
  it('the same batch gives the same ids; every image its own', () => {
    const a = batchJobs('posters', prompts, { steps: 20 });
    const b = batchJobs('posters', prompts.map((p) => ({ ...p })), { steps: 20 });
    expect(a.map((j) => j.id)).toEqual(b.map((j) => j.id));
    expect(new Set(a.map((j) => j.id)).size).toBe(3); // the repeated prompt is another image (index, seed)
    for (const j of a) {
      expect(j.id).toMatch(/^posters-\d+-seed\d+-[0-9a-f]{12}$/);
      expect(j.id).not.toContain(':');
    }
  });

  it('seeds, names and options as a local render would use them', () => {
    const jobs = batchJobs('posters', prompts, { seed: 100, steps: 12, guidanceScale: 3 });
    expect(jobs.map((j) => j.data.fileName)).toEqual(['0001-seed100-a-red-circle.png', '0002-seed7-a-blue-square.png', '0003-seed102-a-red-circle.png']);
    expect(jobs[1].data.options).toMatchObject({ seed: 7, steps: 12, guidanceScale: 3 });
    expect(jobs[1].data).toMatchObject({ batch: 'posters', index: 1, prompt: 'a blue square', lora: [] });
  });

  it('other options or another prompt make other jobs; another batch name too', () => {
    const base = batchJobs('posters', prompts, { steps: 20 }).map((j) => j.id);
    const steps = batchJobs('posters', prompts, { steps: 21 }).map((j) => j.id);
    expect(steps.every((id, i) => id !== base[i])).toBe(true);
    const changed = batchJobs('posters', [prompts[0], { prompt: 'a green square', seed: 7 }, prompts[2]], { steps: 20 }).map((j) => j.id);
    expect(changed.map((id, i) => id === base[i])).toEqual([true, false, true]);
    expect(batchJobs('flyers', prompts, { steps: 20 }).every((j, i) => j.id !== base[i])).toBe(true);
  });

  it('batch names are checked', () => {
    expect(checkBatchName('run_2026-12.v2')).toBe('run_2026-12.v2');
    for (const bad of ['', 'a:b', 'a b', 'x'.repeat(65)])
      expect(() => checkBatchName(bad)).toThrow(expect.objectContaining({ code: 'ERR_SANA_INVALID_OPTION' }));
  });
});
