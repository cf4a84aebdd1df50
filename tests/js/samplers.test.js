// The static page's samplers (src/mnist_diffusion/serve/samplers.js) against vectors made in Python by
// tests/test_static_samplers.py, which runs this file with `node --test` and the vectors' path in $VECTORS.
"use strict";
const test = require("node:test");
const assert = require("node:assert");
const fs = require("node:fs");
const path = require("node:path");

const S = require(path.join(__dirname, "..", "..", "src", "mnist_diffusion", "serve", "samplers.js"));
const vectors = JSON.parse(fs.readFileSync(process.env.VECTORS, "utf8"));

function close(got, want, tolerance, what) {
  assert.strictEqual(got.length, want.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  assert.ok(worst <= tolerance, `${what}: max |js - python| = ${worst} > ${tolerance}`);
}

// The toy network of the vectors, as in Python: the same numbers in, the same numbers out; `inputs` gathers the
// time and interval inputs of each call that has an interval.
function toyNet(D, inputs = []) {
  const P = Array.from({ length: D }, (_, i) => Math.sin(i * 0.37));
  return async (x, tNet, labels, w, interval) => {
    const B = tNet.length, out = new Float64Array(x.length);
    if (interval) inputs.push([tNet, interval]);
    for (let b = 0; b < B; b++) for (let j = 0; j < D; j++) {
      let v = 0.8 * Math.tanh(x[b * D + j]) * Math.cos(tNet[b] / 700);
      if (labels) v += 0.05 * (labels[b] + 1) * P[j];
      if (w) v += 0.03 * w[b];
      if (interval) v += 0.2 * Math.sin(interval[b] / 300);
      out[b * D + j] = v;
    }
    return out;
  };
}
function tutorialNet(D) {
  const P = Array.from({ length: D }, (_, i) => Math.sin(i * 0.37));
  return async (x) => x.map((v, i) => 0.9 * Math.tanh(v) + 0.05 * P[i % D]);
}

async function run(c, inputs) {
  const frames = [];
  const record = (step) => { frames.push([step.i, step.t, step.attempt || 0]); };
  let x = Float64Array.from(c.x);
  const generator = c.generator_seed === null ? null : S.torchGenerator(BigInt(c.generator_seed));
  if (c.process === "meanflow") {  // as static.js walks a MeanFlow model, on the flow's path
    const velocity = S.makeAverageVelocity({ net: toyNet(c.dims, inputs), numClasses: c.classes, labels: c.labels,
                                             batch: c.batch, float32: c.float32 });
    const cb = c.known ? S.chain(S.projection(S.flowPath, c.known, c.mask), record) : record;
    return [await S.SAMPLERS.meanflow[c.sampler](velocity, x, S.flowGrid(c.steps, c.shift), generator, cb), frames];
  }
  if (c.process === "tutorial") {
    const cb = c.known ? S.chain(S.projection(null, c.known, c.mask), record) : record;
    return [await S.sampleTutorial(tutorialNet(c.dims), x, c.steps, cb), frames];
  }
  const schedule = c.process === "flow" ? S.flowPath : S.makeSchedule(c.schedule, c.timesteps);
  const denoiser = S.makeDenoiser({
    net: toyNet(c.dims), schedule, prediction: c.prediction, numClasses: c.classes, guidanceInput: c.guidance_input,
    labels: c.labels, guidance: c.guidance, guidanceInterval: c.interval, batch: c.batch,
  });
  const cb = c.known ? S.chain(S.projection(schedule, c.known, c.mask), record) : record;
  const grid = c.process === "flow" ? S.flowGrid(c.steps, c.shift) : S.timestepGrid(c.timesteps, c.steps, c.spacing);
  if (c.resample > 1) return [await S.sampleRepaint(denoiser, x, grid, c.resample, 1, generator, cb), frames];
  const walk = S.SAMPLERS[c.process][c.sampler];
  return [await walk(denoiser, x, grid, generator, cb, ...(c.sampler === "ddim" ? [c.eta] : [])), frames];
}

test("torch's generator: randn and rand draw what torch draws", () => {
  for (const c of vectors.randn) {
    const g = S.torchGenerator(BigInt(c.seed));
    c.draws.forEach((want, k) => close(c.uniform ? g.rand(c.n) : g.randn(c.n), want, 1e-5, `seed ${c.seed} draw ${k}`));
  }
});

test("any digit: Python's random picks the same digit for each seed", () => {
  const { seeds, classes, digits } = vectors.digits;
  assert.deepStrictEqual(seeds.map((s) => S.digitForSeed(BigInt(s), classes)), digits);
});

test("timestep grids and schedules", () => {
  for (const g of vectors.grids) {
    const got = g.shift === undefined ? S.timestepGrid(g.timesteps, g.steps, g.spacing) : S.flowGrid(g.steps, g.shift);
    close(got, g.grid, g.shift === undefined ? 0 : 1e-12, JSON.stringify({ ...g, grid: undefined }));
  }
  for (const a of vectors.alpha_bar) {
    const s = S.makeSchedule(a.schedule, a.timesteps);
    close(a.ts.map((t) => s.alphaBar(t)), a.values, 1e-12, `${a.schedule} ${a.timesteps}`);
  }
});

for (const c of vectors.samples) {
  test(`sampler ${c.name}`, async () => {
    const inputs = [];
    const [x, frames] = await run(c, inputs);
    close(x, c.expected, c.tolerance, c.name);
    close(inputs.flat(2), c.inputs.flat(2), 0, "the network's time and interval inputs");
    assert.deepStrictEqual(frames.map((f) => [f[0], f[2]]), c.frames.map((f) => [f[0], f[2]]), "the callback's steps");
    close(frames.map((f) => f[1]), c.frames.map((f) => f[1]), 1e-9, "the callback's t");
  });
}
