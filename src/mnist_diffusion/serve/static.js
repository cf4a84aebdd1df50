// The static edition's engine (`mnist-diffusion export-web`): every denoising step runs in this page, the network
// in ONNX Runtime Web (WebAssembly, the files beside this one) and the sampler in samplers.js, so a static server
// (GitHub Pages, `python -m http.server`) is all it needs. It answers what the served page's API answers
// (page.js's engine interface) with the served page's settings and checks, and for the same model, seed and
// settings draws the same digits: the starting noise is torch's for that seed (samplers.js ports its generator).
// Loaded before page.js, which takes window.mnistDiffusionEngine instead of the server's.
(function () {
  "use strict";
  const S = window.mnistSamplers;
  const MAX_SEED = 2 ** 40, MAX_STEPS = 200, MAX_N = 400, MAX_RESAMPLE = 10, GUIDANCE = [0, 20];
  // A static server sends no cross-origin isolation headers, which WebAssembly threads need: one thread.
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL("ort/", document.baseURI).href;
  ort.env.logLevel = "error";

  let catalogue = null;
  const sessions = new Map();
  const stats = { passes: 0, passMs: 0 };  // network passes and their milliseconds, for the curious and the tests

  async function models() {
    if (!catalogue) {
      const r = await fetch("models.json");
      if (!r.ok) throw new Error(`models.json could not be read (${r.status} ${r.statusText}).`);
      catalogue = await r.json();
    }
    return catalogue.models;
  }
  function find(name) {
    const m = catalogue.models.find((m) => m.name === name);
    if (!m) throw new Error(`unknown model ${JSON.stringify(name)}; this page offers ${catalogue.models.map((m) => m.name).join(", ")}.`);
    return m;
  }
  function session(m) {
    if (!sessions.has(m.name)) sessions.set(m.name, ort.InferenceSession.create(m.file, { executionProviders: ["wasm"] }));
    return sessions.get(m.name);
  }
  // The network as samplers.js calls it: float64 batches in, the ONNX file's float32 out; each input the file
  // takes fed by its name (export/onnx.py input_names), a MeanFlow model's interval 1000 (t - r) among them.
  async function network(m) {
    const sess = await session(m);
    return async (x, tNet, labels, w, interval) => {
      const batch = x.length / m.size, feeds = {};
      feeds.x = new ort.Tensor("float32", Float32Array.from(x), [batch, m.channels, 28, 28]);
      if (m.inputs.includes("t")) feeds.t = new ort.Tensor("float32", Float32Array.from(tNet), [batch]);
      if (m.inputs.includes("labels")) feeds.labels = new ort.Tensor("int64", BigInt64Array.from(labels, BigInt), [batch]);
      if (m.inputs.includes("guidance")) {
        feeds.guidance = new ort.Tensor("float32", Float32Array.from(w || new Array(batch).fill(1)), [batch]);
      }
      if (m.inputs.includes("interval")) {
        feeds.interval = new ort.Tensor("float32", Float32Array.from(interval || new Array(batch).fill(0)), [batch]);
      }
      const started = performance.now();
      const out = (await sess.run(feeds)).out.data;
      stats.passes += 1; stats.passMs += performance.now() - started;
      return out;
    };
  }

  // ---- the served page's checks (serve/checks.py), one sentence each --------------------------------------------
  const whole = (v) => Number.isInteger(v);
  function settings(m, body) {
    const { steps = null, guidance = null, seed = 0, digit = null } = body;
    if (steps !== null && (!whole(steps) || steps < 1 || steps > MAX_STEPS)) {
      throw new Error(`steps must be a whole number from 1 to ${MAX_STEPS}, got ${steps}.`);
    }
    if (guidance !== null && (typeof guidance !== "number" || !(guidance >= GUIDANCE[0] && guidance <= GUIDANCE[1]))) {
      throw new Error(`guidance must be a number from ${GUIDANCE[0]} to ${GUIDANCE[1]}, got ${guidance}.`);
    }
    if (!whole(seed) || seed < 0 || seed > MAX_SEED) throw new Error(`seed must be a whole number from 0 to ${MAX_SEED}, got ${seed}.`);
    if (digit !== null && (!whole(digit) || digit < 0 || digit >= Math.max(m.classes, 1))) {
      throw new Error(m.classes ? `digit must be 0-${m.classes - 1} or empty (any digit), got ${digit}.`
                                : "this model is unconditional; leave the digit empty.");
    }
    const sampler = body.sampler || m.sampler;
    if (!m.samplers.includes(sampler)) throw new Error(`the sampler ${sampler} is not one this page runs for ${m.name}; choose ${m.samplers.join(", ")}.`);
    return { steps, guidance: guidance === null ? m.guidance : guidance, seed, digit, sampler };
  }
  function count(body, key, fallback, high) {
    const v = body[key] === undefined ? fallback : body[key];
    if (!whole(v) || v < 1 || v > high) throw new Error(`${key} must be a whole number from 1 to ${high}, got ${v}.`);
    return v;
  }

  // ---- sampling: Pipeline.sample and Pipeline.inpaint for one batch ---------------------------------------------
  // A MeanFlow model walks the flow's straight path, so its projection and noise levels are the flow's
  // (process.py: MeanFlowProcess inherits FlowProcess's).
  const FLOW_PATHS = ["flow", "meanflow"];
  function schedule(m) {
    if (m.kind === "tutorial") return null;
    return FLOW_PATHS.includes(m.kind) ? S.flowPath : S.makeSchedule(m.schedule, m.timesteps);
  }
  async function walk(m, x, labels, guidance, steps, sampler, seed, start, callback, resample = 1) {
    const net = await network(m), generator = S.torchGenerator(S.stepSeed(seed, start));
    if (m.kind === "tutorial") return S.sampleTutorial((z) => net(z, null, null, null), x, steps, callback);
    if (m.kind === "meanflow") {  // MeanFlowProcess.sample: no guidance pass, the times as the float32 pipeline's
      if (guidance !== 1) {
        throw new Error("a MeanFlow model has its guidance folded in by training; leave the guidance at 1.");
      }
      const velocity = S.makeAverageVelocity({ net, numClasses: m.classes, labels, batch: x.length / m.size,
                                               float32: true });
      return S.SAMPLERS.meanflow[sampler](velocity, x, S.flowGrid(steps, m.shift), generator, callback);
    }
    const sched = schedule(m);
    const denoiser = S.makeDenoiser({ net, schedule: sched, prediction: m.prediction, numClasses: m.classes,
                                      guidanceInput: m.guidance_input, labels, guidance,
                                      guidanceInterval: m.guidance_interval, batch: x.length / m.size });
    if (m.kind === "flow") return S.SAMPLERS.flow[sampler](denoiser, x, S.flowGrid(steps, m.shift), generator, callback);
    const grid = S.timestepGrid(m.timesteps, steps, m.spacing);
    if (resample > 1) return S.sampleRepaint(denoiser, x, grid, resample, 1, generator, callback);
    return S.SAMPLERS.ddpm[sampler](denoiser, x, grid, generator, callback, m.eta);
  }
  const paint = () => new Promise((resolve) => setTimeout(resolve, 0));  // let the page show the step
  function frames(m, onFrame, extra) {
    const sched = schedule(m);
    return async (step) => {
      onFrame({ i: step.i, steps: step.steps, t: step.t, noise: sched ? sched.alphaSigma(step.t)[1] : null,
                attempt: step.attempt || 0, x_t: S.toUint8(step.x_t, m.value_range),
                x0: S.toUint8(step.x0, m.value_range), ...extra });
      await paint();
    };
  }

  async function generate(body, onFrame) {
    await models();
    const started = performance.now(), m = find(body.model), s = settings(m, body);
    let digit = s.digit, chosen = {};
    if (digit === null && m.classes) { digit = S.digitForSeed(s.seed, m.classes); chosen = { digit }; }
    const x = S.initialNoise(1, m.size, s.seed, m.noise);
    const out = await walk(m, x, digit === null ? null : [digit], digit === null ? 1 : s.guidance, s.steps || m.steps,
                           s.sampler, s.seed, 0, frames(m, onFrame, chosen));
    return { image: S.toUint8(out, m.value_range), seconds: (performance.now() - started) / 1000, ...chosen };
  }

  async function inpaint(body, onFrame) {
    await models();
    const started = performance.now(), m = find(body.model), s = settings(m, body);
    const resample = count(body, "resample", 1, MAX_RESAMPLE);
    const mask = Array.from(body.mask, (v) => (v ? 1 : 0)), known = S.toFloat(body.image, m.value_range);
    if (!mask.some(Boolean)) throw new Error("nothing is known yet: draw part of a digit (or load one) before asking for a completion.");
    if (mask.every(Boolean)) throw new Error("nothing is left to complete: erase part of the digit first.");
    if (resample > 1 && !m.resamplers.includes(s.sampler)) {
      throw new Error(`RePaint resampling steps with DDIM; the ${s.sampler} sampler cannot resample: use resample 1.`);
    }
    const edit = S.projection(schedule(m), known, mask);
    const x = S.initialNoise(1, m.size, s.seed, m.noise);
    const labels = s.digit === null ? null : [s.digit];
    const out = await walk(m, x, labels, labels ? s.guidance : 1, s.steps || m.inpaint_steps, s.sampler, s.seed, 0,
                           S.chain(edit, frames(m, onFrame, {})), resample);
    return { image: S.toUint8(S.masked(mask, known, out), m.value_range), seconds: (performance.now() - started) / 1000 };
  }

  // n digits in batches of the model's default size (as Pipeline.sample); with "any digit" 0-9 in turn.
  async function digits(m, body) {
    const s = settings(m, body), n = count(body, "n", 100, MAX_N);
    const cycle = s.digit === null ? (m.classes ? [...Array(m.classes).keys()] : null) : [s.digit];
    const labels = cycle && Array.from({ length: n }, (_, i) => cycle[i % cycle.length]);
    const images = [];
    for (let start = 0; start < n; start += m.batch_size) {
      const size = Math.min(m.batch_size, n - start), x = S.initialNoise(size, m.size, s.seed, m.noise, start);
      const out = await walk(m, x, labels && labels.slice(start, start + size), labels ? s.guidance : 1,
                             s.steps || m.steps, s.sampler, s.seed, start, null);
      for (let i = 0; i < size; i++) images.push(S.toUint8(out, m.value_range, i * m.size));
      await paint();
    }
    return { images, labels };
  }
  async function grid(body) {
    await models();
    const m = find(body.model), { images, labels } = await digits(m, body);
    const cols = labels && labels.length >= 10 ? 10 : Math.ceil(Math.sqrt(images.length)), cell = 56, top = labels ? 22 : 0;
    const canvas = document.createElement("canvas");
    canvas.width = cols * cell; canvas.height = top + Math.ceil(images.length / cols) * cell;
    const ctx = canvas.getContext("2d"), tile = document.createElement("canvas");
    tile.width = tile.height = 28;
    ctx.fillStyle = "black"; ctx.fillRect(0, 0, canvas.width, canvas.height); ctx.imageSmoothingEnabled = false;
    images.forEach((pixels, k) => {
      const img = tile.getContext("2d").createImageData(28, 28);
      for (let i = 0; i < 784; i++) { img.data.fill(pixels[i], 4 * i, 4 * i + 3); img.data[4 * i + 3] = 255; }
      tile.getContext("2d").putImageData(img, 0, 0);
      ctx.drawImage(tile, (k % cols) * cell, top + Math.floor(k / cols) * cell, cell, cell);
    });
    if (labels) {  // each column's digit above it
      ctx.fillStyle = "#ccc"; ctx.font = "16px sans-serif"; ctx.textAlign = "center";
      for (let c = 0; c < cols; c++) ctx.fillText(String(labels[c]), c * cell + cell / 2, 17);
    }
    return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  }

  // Milliseconds per network pass at `batch`, the median of `repeats` after one warm-up pass.
  async function bench(name, batch, repeats = 5) {
    await models();
    const m = find(name), net = await network(m), x = new Float64Array(batch * m.size).map((_, i) => Math.sin(i));
    const t = new Array(batch).fill(500), labels = new Array(batch).fill(0), w = new Array(batch).fill(1.5);
    await net(x, t, labels, w);
    const times = [];
    for (let r = 0; r < repeats; r++) {
      const started = performance.now();
      await net(x, t, labels, w);
      times.push(performance.now() - started);
    }
    return times.sort((a, b) => a - b)[Math.floor(repeats / 2)];
  }

  window.mnistDiffusionEngine = {
    waiting: "running the model in this page...",
    unreachable: "cannot load the models: ",
    models, generate, inpaint, grid, digits, bench, stats,
  };
})();
