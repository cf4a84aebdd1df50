// The samplers of the static edition of the page, written once in JavaScript with the maths of the package's
// diffusion/ (schedule.py, denoiser.py, samplers.py, flow.py, meanflow.py, inpaint.py) and its random numbers
// (batches.py):
// the same inputs give the same outputs to float rounding, pinned by vectors made in Python
// (tests/test_static_samplers.py runs tests/js/samplers.test.js under node).
//
// Arrays: a batch of B samples of D = C*H*W values is one Float64Array of B*D, sample after sample (NCHW).
// Schedule maths is float64, as in Python; the network runs in float32 (its ONNX file).
// Works as a browser script (window.mnistSamplers) and as a CommonJS module (node).
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.mnistSamplers = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  // ---- random numbers: torch's CPU generator and Python's random module, bit for bit ----------------------------
  // Both are MT19937; torch seeds it with the low 32 bits of its seed (init_genrand), Python's random.Random(n)
  // with the 32-bit words of n (init_by_array).
  class MT19937 {
    constructor() {
      this.mt = new Uint32Array(624);
      this.index = 624;
    }
    seed(s) {
      const mt = this.mt;
      mt[0] = s >>> 0;
      for (let i = 1; i < 624; i++) {
        const p = mt[i - 1] ^ (mt[i - 1] >>> 30);
        mt[i] = (Math.imul(1812433253, p) + i) >>> 0;
      }
      this.index = 624;
      return this;
    }
    seedArray(key) {
      this.seed(19650218);
      const mt = this.mt, n = 624;
      let i = 1, j = 0;
      for (let k = Math.max(n, key.length); k; k--) {
        const p = mt[i - 1] ^ (mt[i - 1] >>> 30);
        mt[i] = ((mt[i] ^ Math.imul(p, 1664525)) + key[j] + j) >>> 0;
        i++; j++;
        if (i >= n) { mt[0] = mt[n - 1]; i = 1; }
        if (j >= key.length) j = 0;
      }
      for (let k = n - 1; k; k--) {
        const p = mt[i - 1] ^ (mt[i - 1] >>> 30);
        mt[i] = ((mt[i] ^ Math.imul(p, 1566083941)) - i) >>> 0;
        i++;
        if (i >= n) { mt[0] = mt[n - 1]; i = 1; }
      }
      mt[0] = 0x80000000;
      this.index = 624;
      return this;
    }
    next() {
      const mt = this.mt;
      if (this.index >= 624) {
        for (let k = 0; k < 624; k++) {
          const y = (mt[k] & 0x80000000) | (mt[(k + 1) % 624] & 0x7fffffff);
          mt[k] = mt[(k + 397) % 624] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
        }
        this.index = 0;
      }
      let y = mt[this.index++];
      y ^= y >>> 11;
      y ^= (y << 7) & 0x9d2c5680;
      y ^= (y << 15) & 0xefc60000;
      y ^= y >>> 18;
      return y >>> 0;
    }
  }

  const f32 = Math.fround;

  // torch.Generator().manual_seed(seed) on the CPU: rand(n) and randn(n) draw what torch.rand / torch.randn of n
  // float32 values draw (a uniform float is 24 random bits; randn of 16 or more values is Box-Muller over blocks
  // of 16, the last block redrawn when n is not a multiple of 16).
  function torchGenerator(seed) {
    const mt = new MT19937().seed(Number(BigInt.asUintN(32, BigInt(seed))));
    const uniform = () => (mt.next() & 0xffffff) * 2 ** -24;
    function boxMuller16(d, o) {
      for (let j = 0; j < 8; j++) {
        const u1 = f32(1 - d[o + j]), u2 = d[o + j + 8];
        const radius = f32(Math.sqrt(f32(-2 * f32(Math.log(u1)))));
        const theta = f32(2 * Math.PI * u2);
        d[o + j] = f32(radius * f32(Math.cos(theta)));
        d[o + j + 8] = f32(radius * f32(Math.sin(theta)));
      }
    }
    return {
      rand(n) {
        const out = new Float64Array(n);
        for (let i = 0; i < n; i++) out[i] = uniform();
        return out;
      },
      randn(n) {
        if (n < 16) throw new Error("randn of fewer than 16 values takes another path in torch; not needed here");
        const d = new Float64Array(n);
        for (let i = 0; i < n; i++) d[i] = uniform();
        for (let i = 0; i + 16 <= n; i += 16) boxMuller16(d, i);
        if (n % 16) {
          for (let i = n - 16; i < n; i++) d[i] = uniform();
          boxMuller16(d, n - 16);
        }
        return d;
      },
    };
  }

  // random.Random(seed).randrange(classes): what "any digit" draws for a seed (serve/app.py digit_for_seed).
  function digitForSeed(seed, classes) {
    let n = BigInt(seed);
    const key = [];
    do { key.push(Number(n & 0xffffffffn)); n >>= 32n; } while (n > 0n);
    const mt = new MT19937().seedArray(key);
    const bits = Math.max(1, Math.ceil(Math.log2(classes + 1)));  // int.bit_length of classes
    for (;;) {
      const r = mt.next() >>> (32 - bits);
      if (r < classes) return r;
    }
  }

  // batches.py: image i of a call with `seed` starts from noise seeded with seed + i; the step noise of the batch
  // that starts at image `start` comes from a generator seeded with seed * 7919 + start.
  function stepSeed(seed, start) {
    const value = BigInt(seed) * 7919n + BigInt(start);
    if (value >= 2n ** 64n) throw new Error("seeds this large fold into 64 bits by a hash the page does not port");
    return value;
  }
  function initialNoise(n, size, seed, kind, offset = 0) {
    const out = new Float64Array(n * size);
    for (let i = 0; i < n; i++) {
      const g = torchGenerator(BigInt(seed) + BigInt(offset + i));
      out.set(kind === "uniform" ? g.rand(size) : g.randn(size), i * size);
    }
    return out;
  }

  // ---- noise schedules (schedule.py) and the flow's path (flow.py) ------------------------------------------------
  function roundHalfEven(v) {
    const r = Math.round(v);
    return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }
  function linspace(start, end, steps) {  // torch.linspace's float64 values: from both ends towards the middle
    if (steps === 1) return [start];
    const step = steps > 1 ? (end - start) / (steps - 1) : 0, half = Math.floor(steps / 2), out = [];
    for (let i = 0; i < steps; i++) out.push(i < half ? start + step * i : end - step * (steps - i - 1));
    return out;
  }
  function linearBetas(T) {
    const scale = 1000 / T;
    return linspace(scale * 1e-4, scale * 0.02, T);
  }
  function cosineBetas(T, s = 0.008, maxBeta = 0.999) {
    const f = [];
    for (let i = 0; i <= T; i++) f.push(Math.cos(((i / T + s) / (1 + s)) * Math.PI / 2) ** 2);
    return f.slice(1).map((v, i) => Math.min(1 - v / f[i], maxBeta));
  }
  // The VP process: alpha_bar by DDPM index t in [0, T-1], log-linear between integers (NoiseSchedule).
  function makeSchedule(name, T) {
    const betas = name === "cosine" ? cosineBetas(T) : linearBetas(T);
    const ac = new Float64Array(T);
    let p = 1;
    for (let i = 0; i < T; i++) { p *= 1 - betas[i]; ac[i] = p; }
    const logAc = ac.map(Math.log);
    function alphaBar(t) {
      if (t < 0 || t > T - 1) throw new Error(`Timestep ${t} is outside this schedule's range [0, ${T - 1}].`);
      const lo = Math.floor(t);
      if (t === lo) return ac[lo];
      const hi = Math.min(lo + 1, T - 1), w = t - lo;
      return Math.exp(logAc[lo] + w * (logAc[hi] - logAc[lo]));
    }
    return {
      name, timesteps: T, alphasCumprod: ac, alphaBar,
      alphaSigma(t) { const ab = alphaBar(t); return [Math.sqrt(ab), Math.sqrt(1 - ab)]; },
      networkTime: (t) => t,
    };
  }
  const NETWORK_TIME_SCALE = 1000;
  const flowPath = {
    name: "flow", timesteps: 1,
    alphaSigma(t) {
      if (!(t >= 0 && t <= 1)) throw new Error(`Flow time ${t} is outside [0, 1].`);
      return [1 - t, t];
    },
    networkTime: (t) => t * NETWORK_TIME_SCALE,
  };

  // timestep_grid: a strictly descending grid of `steps` DDPM indices (leading | linspace | trailing).
  function timestepGrid(T, steps, spacing = "trailing") {
    if (!Number.isInteger(steps) || steps < 1 || steps > T) {
      throw new Error(`The number of sampling steps must be between 1 and ${T}, got ${steps}.`);
    }
    const out = [];
    if (spacing === "linspace") return linspace(T - 1, 0, steps).map(roundHalfEven);
    for (let k = 0; k < steps; k++) {
      if (spacing === "leading") out.push((steps - 1 - k) * Math.floor(T / steps));
      else if (spacing === "trailing") out.push(roundHalfEven(T - (k * T) / steps) - 1);
      else throw new Error(`Unknown timestep spacing ${spacing}; the page's samplers take leading, linspace or trailing.`);
    }
    return out;
  }
  // flow_grid: steps + 1 times from 1 to 0, with SD3's shift.
  function flowGrid(steps, shift = 1) {
    const ts = [];
    for (let i = 0; i <= steps; i++) ts.push((steps - i) / steps);
    return shift === 1 ? ts : ts.map((t) => (shift * t) / (1 + (shift - 1) * t));
  }

  // ---- arrays ---------------------------------------------------------------------------------------------------
  function lin(a, x, b, y) {  // a x + b y, elementwise (a, b numbers)
    const out = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = a * x[i] + b * y[i];
    return out;
  }
  function masked(mask, known, x) {  // mask * known + (1 - mask) * x; mask and known hold one sample, x a batch
    const out = new Float64Array(x.length), d = known.length;
    for (let i = 0; i < x.length; i++) out[i] = mask[i % d] * known[i % d] + (1 - mask[i % d]) * x[i];
    return out;
  }

  // ---- the denoiser (denoiser.py) -------------------------------------------------------------------------------
  // to_x0_eps: (x0, eps) from a network output that predicts eps, x0, v or a flow's velocity.
  function toX0Eps(x, out, prediction, alpha, sigma) {
    const n = x.length, x0 = new Float64Array(n), eps = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const o = out[i];
      if (prediction === "eps") { x0[i] = (x[i] - sigma * o) / alpha; eps[i] = o; }
      else if (prediction === "x0") { x0[i] = o; eps[i] = (x[i] - alpha * o) / sigma; }
      else if (prediction === "v") { x0[i] = alpha * x[i] - sigma * o; eps[i] = sigma * x[i] + alpha * o; }
      else if (prediction === "velocity") { x0[i] = (x[i] - sigma * o) / (alpha + sigma); eps[i] = x0[i] + o; }
      else throw new Error(`Unknown prediction type ${prediction}.`);
    }
    return [x0, eps];
  }

  // Denoiser: D(x_t, t) -> [x0, eps] for `net(x, tNet, labels, guidance)` (async; tNet, labels, guidance: one
  // number per sample, labels and guidance null where the network takes none), with the conditioning bound in:
  // labels (one per sample, or null: the "no label" class of a conditional network), classifier-free guidance
  // (one batch of 2B, out_u + w (out_c - out_u)), or the guidance scale as an input for a distilled student, and
  // a guidance interval (low, high) of VE noise levels where guidance applies.
  function makeDenoiser({ net, schedule, prediction, numClasses = 0, guidanceInput = false, labels = null,
                          guidance = 1, guidanceInterval = null, batch }) {
    if (numClasses && labels === null) labels = new Array(batch).fill(numClasses);
    const D = async (x, t) => {
      const [alpha, sigma] = schedule.alphaSigma(t);
      const tNet = new Array(batch).fill(schedule.networkTime(t));
      let guided = !guidanceInput && guidance !== 1;
      if (guided && guidanceInterval) {
        const level = sigma / alpha;
        guided = level > guidanceInterval[0] && level <= guidanceInterval[1];
      }
      let out;
      if (guidanceInput) out = await net(x, tNet, labels, new Array(batch).fill(guidance));
      else if (!guided) out = await net(x, tNet, labels, null);
      else {
        const both = new Float64Array(2 * x.length);
        both.set(x); both.set(x, x.length);
        const o = await net(both, tNet.concat(tNet), labels.concat(new Array(batch).fill(numClasses)), null);
        out = new Float64Array(x.length);
        for (let i = 0; i < x.length; i++) out[i] = o[x.length + i] + guidance * (o[i] - o[x.length + i]);
      }
      return toX0Eps(x, out, prediction, alpha, sigma);
    };
    D.schedule = schedule;
    return D;
  }

  // MeanFlow's average velocity u(x, r, t) (meanflow.py average_velocity) for `net(x, tNet, labels, guidance,
  // interval)`: the times on the network's scale, interval = 1000 (t - r), the labels bound in (a conditional
  // network's "no label" class where null, as the network itself fills it in). float32: the times as a float32
  // sample's (meanflow._per_sample), which is what the pipeline samples in, so the network sees the same inputs.
  function makeAverageVelocity({ net, numClasses = 0, labels = null, batch, float32 = false }) {
    if (numClasses && labels === null) labels = new Array(batch).fill(numClasses);
    const cast = float32 ? f32 : (v) => v;
    return (x, r, t) => {
      const tt = cast(t), rr = cast(r);
      const tNet = cast(tt * NETWORK_TIME_SCALE), gap = cast(cast(tt - rr) * NETWORK_TIME_SCALE);
      return net(x, new Array(batch).fill(tNet), labels, null, new Array(batch).fill(gap));
    };
  }

  // ---- the step callback (steps.py) -----------------------------------------------------------------------------
  // callback({i, t, steps, x_t, x0}) may return a replacement for x_t (or nothing).
  async function visit(callback, i, t, steps, x, x0, extra) {
    if (!callback) return x;
    const out = await callback({ i, t, steps, x_t: x, x0, ...extra });
    return out === undefined || out === null ? x : out;
  }
  function chain(...callbacks) {
    const active = callbacks.filter(Boolean);
    if (active.length <= 1) return active[0] || null;
    return async (step) => {
      let x = step.x_t;
      for (const c of active) {
        const out = await c({ ...step, x_t: x });
        if (out !== undefined && out !== null) x = out;
      }
      return x;
    };
  }

  // ---- samplers over a DDPM timestep grid (samplers.py) ---------------------------------------------------------
  function prepareGrid(schedule, grid) {  // alpha_bar at each grid point, then 1 for the data
    return grid.map((t) => schedule.alphaBar(t)).concat([1]);
  }

  // Ancestral sampling, Ho et al. (2020) alg. 2, via the posterior between grid points.
  async function sampleDdpm(denoiser, x, grid, generator, callback) {
    const ab = prepareGrid(denoiser.schedule, grid);
    for (let i = 0; i < grid.length; i++) {
      const abT = ab[i], abS = ab[i + 1], beta = 1 - abT / abS;
      const cX0 = (Math.sqrt(abS) * beta) / (1 - abT), cXt = (Math.sqrt(abT / abS) * (1 - abS)) / (1 - abT);
      const std = Math.sqrt((beta * (1 - abS)) / (1 - abT));
      const [x0] = await denoiser(x, grid[i]);
      x = await visit(callback, i, grid[i], grid.length, x, x0);
      x = lin(cX0, x0, cXt, x);
      if (std > 0) x = lin(1, x, std, generator.randn(x.length));
    }
    return x;
  }

  // DDIM, Song et al. (2021) eq. 12; eta = 0 is deterministic.
  async function sampleDdim(denoiser, x, grid, generator, callback, eta = 0) {
    const ab = prepareGrid(denoiser.schedule, grid);
    for (let i = 0; i < grid.length; i++) {
      const abT = ab[i], abS = ab[i + 1];
      const sig = eta * Math.sqrt(((1 - abS) / (1 - abT)) * (1 - abT / abS));
      const cEps = Math.sqrt(Math.max(1 - abS - sig * sig, 0));
      let [x0, eps] = await denoiser(x, grid[i]);
      const replaced = await visit(callback, i, grid[i], grid.length, x, x0);
      if (replaced !== x) eps = lin(1 / Math.sqrt(1 - abT), replaced, -Math.sqrt(abT) / Math.sqrt(1 - abT), x0);
      x = lin(Math.sqrt(abS), x0, cEps, eps);
      if (sig > 0) x = lin(1, x, sig, generator.randn(x.length));
    }
    return x;
  }

  // DPM-Solver++(2M), Lu et al. (2022) alg. 2; the first and the last step (to the data) are first order.
  async function sampleDpmpp2m(denoiser, x, grid, generator, callback) {
    const ab = prepareGrid(denoiser.schedule, grid);
    const alpha = ab.map(Math.sqrt), sigma = ab.map((v) => Math.sqrt(1 - v));
    const lam = alpha.map((a, i) => Math.log(a) - Math.log(sigma[i]));
    const h = grid.map((_, i) => lam[i + 1] - lam[i]);
    let x0Prev = null;
    for (let i = 0; i < grid.length; i++) {
      const ratio = sigma[i + 1] / sigma[i], phi = -alpha[i + 1] * Math.expm1(-h[i]);
      const r = i === 0 ? 1 : h[i - 1] / h[i];
      const [x0] = await denoiser(x, grid[i]);
      x = await visit(callback, i, grid[i], grid.length, x, x0);
      const d = x0Prev === null || i === grid.length - 1 ? x0 : lin(1 + 1 / (2 * r), x0, -1 / (2 * r), x0Prev);
      x = lin(ratio, x, phi, d);
      x0Prev = x0;
    }
    return x;
  }

  // Deterministic Heun, Karras et al. (2022) alg. 1, in VE sigma space; the last step to sigma = 0 is Euler.
  async function sampleHeun(denoiser, x, grid, generator, callback) {
    const ab = prepareGrid(denoiser.schedule, grid);
    const sig = ab.map((v) => Math.sqrt((1 - v) / v)), cIn = ab.map(Math.sqrt);
    let xVp = x, xVe = lin(1 / cIn[0], x, 0, x);
    for (let i = 0; i < grid.length; i++) {
      const [x0] = await denoiser(xVp, grid[i]);
      const replaced = await visit(callback, i, grid[i], grid.length, xVp, x0);
      if (replaced !== xVp) { xVp = replaced; xVe = lin(1 / cIn[i], replaced, 0, replaced); }
      if (i === grid.length - 1) return x0;
      const d = lin(1 / sig[i], xVe, -1 / sig[i], x0), dt = sig[i + 1] - sig[i];
      const xEuler = lin(1, xVe, dt, d);
      const [x0Next] = await denoiser(lin(cIn[i + 1], xEuler, 0, xEuler), grid[i + 1]);
      const dNext = lin(1 / sig[i + 1], xEuler, -1 / sig[i + 1], x0Next);
      xVe = lin(1, xVe, dt * 0.5, lin(1, d, 1, dNext));
      xVp = lin(cIn[i + 1], xVe, 0, xVe);
    }
    throw new Error("unreachable");
  }

  // RePaint's resampling (Lugmayr et al. 2022, alg. 1, jump length 1) with DDIM(eta) steps (inpaint.py).
  async function sampleRepaint(denoiser, x, grid, resample, eta, generator, callback) {
    const ab = prepareGrid(denoiser.schedule, grid);
    let x0 = x;
    for (let i = 0; i < grid.length; i++) {
      const abT = ab[i], abS = ab[i + 1];
      const sig = eta * Math.sqrt(((1 - abS) / (1 - abT)) * (1 - abT / abS));
      const cEps = Math.sqrt(Math.max(1 - abS - sig * sig, 0));
      const upX = Math.sqrt(abT / abS), upNoise = Math.sqrt(Math.max(1 - abT / abS, 0));
      for (let attempt = 0; attempt < (i === grid.length - 1 ? 1 : resample); attempt++) {
        if (attempt) x = lin(upX, x, upNoise, generator.randn(x.length));
        let eps;
        [x0, eps] = await denoiser(x, grid[i]);
        const replaced = await visit(callback, i, grid[i], grid.length, x, x0, { attempt });
        if (replaced !== x) eps = lin(1 / Math.sqrt(1 - abT), replaced, -Math.sqrt(abT) / Math.sqrt(1 - abT), x0);
        x = lin(Math.sqrt(abS), x0, cEps, eps);
        if (sig > 0) x = lin(1, x, sig, generator.randn(x.length));
      }
    }
    return x0;
  }

  // ---- samplers on the flow's straight path (flow.py): dx/dt = (x - x0) / t over a grid from 1 to 0 ------------
  async function flowEuler(denoiser, x, ts, generator, callback) {
    const steps = ts.length - 1;
    for (let i = 0; i < steps; i++) {
      const t = ts[i], s = ts[i + 1];
      const [x0] = await denoiser(x, t);
      x = await visit(callback, i, t, steps, x, x0);
      x = lin(s / t, x, 1 - s / t, x0);
    }
    return x;
  }
  async function flowHeun(denoiser, x, ts, generator, callback) {
    const steps = ts.length - 1;
    for (let i = 0; i < steps; i++) {
      const t = ts[i], s = ts[i + 1];
      const [x0] = await denoiser(x, t);
      x = await visit(callback, i, t, steps, x, x0);
      if (s === 0) { x = x0; continue; }
      const d = lin(1 / t, x, -1 / t, x0), xEuler = lin(1, x, s - t, d);
      const [x0Next] = await denoiser(xEuler, s);
      x = lin(1, x, (s - t) * 0.5, lin(1, d, 1 / s, lin(1, xEuler, -1, x0Next)));
    }
    return x;
  }
  async function flowMidpoint(denoiser, x, ts, generator, callback) {
    const steps = ts.length - 1;
    for (let i = 0; i < steps; i++) {
      const t = ts[i], s = ts[i + 1];
      const [x0] = await denoiser(x, t);
      x = await visit(callback, i, t, steps, x, x0);
      if (s === 0) { x = x0; continue; }
      const mid = 0.5 * (t + s), xMid = lin(1, x, (mid - t) / t, lin(1, x, -1, x0));
      const [x0Mid] = await denoiser(xMid, mid);
      x = lin(1, x, (s - t) / mid, lin(1, xMid, -1, x0Mid));
    }
    return x;
  }

  // MeanFlow (meanflow.py sample_meanflow): jumps x_r = x_t - (t - r) u(x_t, r, t) over a grid from 1 to 0, one
  // network pass a step; the callback's clean estimate at t is x_t - t u, and a replaced x_t jumps with the same u.
  async function sampleMeanflow(velocity, x, ts, generator, callback) {
    if (ts.length < 2 || ts[ts.length - 1] !== 0 || ts.some((t, i) => i && t >= ts[i - 1])) {
      throw new Error(`A MeanFlow grid must descend strictly to exactly 0, got ${ts}.`);
    }
    const steps = ts.length - 1;
    for (let i = 0; i < steps; i++) {
      const t = ts[i], r = ts[i + 1];
      const avg = await velocity(x, r, t);
      x = await visit(callback, i, t, steps, x, lin(1, x, -t, avg));
      x = lin(1, x, -(t - r), avg);
    }
    return x;
  }

  // The tutorial's sampler (tutorial.py): x <- x (1 - m) + net(x) m with m = 1 / (steps - i); t = 1 - i / steps.
  async function sampleTutorial(net, x, steps, callback) {
    for (let i = 0; i < steps; i++) {
      const pred = await net(x);
      x = await visit(callback, i, 1 - i / steps, steps, x, pred);
      const mix = 1 / (steps - i);
      x = lin(1 - mix, x, mix, pred);
    }
    return x;
  }

  // The registry: which function walks which kind's grid; `grid` is what that function takes.
  const SAMPLERS = {
    ddpm: { ddpm: sampleDdpm, ddim: sampleDdim, dpmpp_2m: sampleDpmpp2m, heun: sampleHeun },
    flow: { euler: flowEuler, heun: flowHeun, midpoint: flowMidpoint },
    meanflow: { meanflow: sampleMeanflow },
    tutorial: { tutorial: null },
  };

  // ---- inpainting (inpaint.py, process.py): the known region held by x0 projection ------------------------------
  // x_t <- x_t + alpha (paste(x0) - x0), paste(x0) = mask * known + (1 - mask) * x0; the tutorial's process moves
  // x by 1 / (steps - i - 1) of the correction instead (TutorialProcess.projection).
  function projection(schedule, known, mask) {
    return (step) => {
      const x0 = step.x0, pasted = masked(mask, known, x0);
      if (!schedule) {
        const left = step.steps - step.i - 1;
        return left ? lin(1, step.x_t, 1 / left, lin(1, pasted, -1, x0)) : null;
      }
      const [alpha] = schedule.alphaSigma(step.t);
      return lin(1, step.x_t, alpha, lin(1, pasted, -1, x0));
    };
  }

  // ---- pixels (data/__init__.py) --------------------------------------------------------------------------------
  function toUint8(x, valueRange, offset = 0, size = 784) {  // float in the data range -> 0-255, rounded, clipped
    const out = new Uint8ClampedArray(size);
    for (let i = 0; i < size; i++) {
      const v = x[offset + i], unit = valueRange === "signed" ? (v + 1) / 2 : v;
      out[i] = roundHalfEven(f32(Math.min(1, Math.max(0, unit)) * 255));
    }
    return out;
  }
  function toFloat(pixels, valueRange) {
    const out = new Float64Array(pixels.length);
    for (let i = 0; i < pixels.length; i++) {
      const v = f32(pixels[i] / 255);
      out[i] = valueRange === "signed" ? f32(v * 2 - 1) : v;
    }
    return out;
  }

  return {
    MT19937, torchGenerator, digitForSeed, stepSeed, initialNoise, roundHalfEven,
    makeSchedule, flowPath, timestepGrid, flowGrid, toX0Eps, makeDenoiser, makeAverageVelocity, chain, projection,
    sampleDdpm, sampleDdim, sampleDpmpp2m, sampleHeun, sampleRepaint, flowEuler, flowHeun, flowMidpoint,
    sampleMeanflow, sampleTutorial, SAMPLERS, toUint8, toFloat, masked,
  };
});
