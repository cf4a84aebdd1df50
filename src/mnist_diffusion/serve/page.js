// The page's script, one front end for two engines: the served page (`mnist-diffusion serve`) runs each denoising
// step on the server, whose stream of frames `serverEngine` reads; the static edition (`mnist-diffusion
// export-web`) loads static.js first, which sets window.mnistDiffusionEngine to ONNX Runtime in the page. An engine:
//   models()              -> [{name, kind, classes, sampler, steps, inpaint_steps, drawn_steps, inpaint_resample,
//                             guidance, samplers}]
//   generate(body, frame) -> {image, digit?, seconds}; frame({i, steps, t, noise, attempt, x_t, x0, digit?}) a step
//   inpaint(body, frame)  -> the same, the completion as image (body.image, body.mask: 784 bytes each)
//   grid(body)            -> a PNG Blob of body.n digits
// Pixels are Uint8Arrays of 784 values; a refusal is an Error whose message is one sentence.
"use strict";
const $ = (id) => document.getElementById(id);
// stepsTouched: whether the steps slider was moved since the model was chosen; until then a completion uses the
// model's inpainting steps (more than its sampling steps: completions keep improving with steps), and more still
// for drawn strokes, which leave most of the canvas open.
// frames: the recorded steps of the last digit (and the finished digit last), shown one at a time by the player.
const state = { models: [], last: null, ink: new Uint8ClampedArray(784), erased: new Uint8Array(784),
                filled: null, mode: "draw", busy: false, stepsTouched: false,
                frames: [], shown: -1, playing: false, streaming: false, timer: null, chosen: null };
window.mnistDiffusion = state;  // for tests and the curious

function say(text, ok) { const m = $("message"); m.textContent = text || ""; m.className = ok ? "ok" : ""; }
function setBusy(busy) {
  state.busy = busy;
  for (const id of ["generate", "next-seed", "complete", "grid"]) $(id).disabled = busy;
}
function decode(b64) { const s = atob(b64); const a = new Uint8Array(s.length); for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i); return a; }
function encode(arr) { let s = ""; for (const v of arr) s += String.fromCharCode(v); return btoa(s); }
function paint(canvas, pixels) {
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(28, 28);
  for (let i = 0; i < 784; i++) { img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = pixels[i]; img.data[4 * i + 3] = 255; }
  ctx.putImageData(img, 0, 0);
}
// Everything from the engine goes into the page as text (textContent, option values), never as HTML: a run
// directory's name is the model's name, and it may hold any characters.
function options(select, pairs) {
  select.replaceChildren(...pairs.map(([value, text]) => { const o = document.createElement("option");
                                                          o.value = value; o.textContent = text; return o; }));
}
// ---- the server's engine: the API of serve/app.py ----------------------------------------------------------------
function serverEngine() {
  // The server's sentence for a refused request (every error it sends is {"error": sentence}).
  async function refusal(response) {
    const body = await response.json().catch(() => ({}));
    return new Error(body.error || `the server answered ${response.status} ${response.statusText}`);
  }
  const post = (url, body) => fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify(body) });
  async function stream(url, body, onFrame) {
    const response = await post(url, body);
    if (!response.ok) throw await refusal(response);
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const frame = JSON.parse(buffer.slice(0, nl)); buffer = buffer.slice(nl + 1);
        if (frame.error) throw new Error(frame.error);
        if (frame.done) return { ...frame, image: decode(frame.image) };
        onFrame({ ...frame, x_t: decode(frame.x_t), x0: decode(frame.x0) });
      }
    }
    throw new Error("the server closed the stream before the digit was finished.");
  }
  return {
    waiting: "asking the server...",
    unreachable: "cannot reach the server: ",
    async models() { const r = await fetch("/api/models"); if (!r.ok) throw await refusal(r); return r.json(); },
    generate: (body, onFrame) => stream("/api/generate", body, onFrame),
    inpaint: (body, onFrame) => stream("/api/inpaint", { ...body, image: encode(body.image), mask: encode(body.mask) },
                                       onFrame),
    async grid(body) { const r = await post("/api/grid", body); if (!r.ok) throw await refusal(r); return r.blob(); },
  };
}
const engine = window.mnistDiffusionEngine || serverEngine();
function model() { return state.models.find((m) => m.name === $("model").value); }
function settings() {
  const d = $("digit").value;
  return { model: $("model").value, digit: d === "" ? null : Number(d), guidance: Number($("guidance").value),
           sampler: $("sampler").value, steps: Number($("steps").value), seed: Number($("seed").value) };
}

// A slider that can show `value` exactly: its range widened to hold it, its step kept only if it lands there.
function fit(slider, value) {
  if (value > Number(slider.max)) slider.max = String(value);
  if (value < Number(slider.min)) slider.min = String(value);
  const step = Number(slider.dataset.step || slider.step), k = (value - Number(slider.min)) / step;
  slider.dataset.step = String(step);
  slider.step = Math.abs(k - Math.round(k)) < 1e-9 ? String(step) : "any";
  slider.value = String(value);
}
function defaults() {
  const m = model(); if (!m) return;
  options($("sampler"), m.samplers.map((s) => [s, s]));
  $("sampler").value = m.sampler;
  // A MeanFlow model's guidance was folded in when it was trained: it takes none (MeanFlowProcess.sample).
  fit($("steps"), m.steps); fit($("guidance"), m.guidance); $("guidance").disabled = !m.classes || m.kind === "meanflow";
  state.stepsTouched = false;
  showValues();
}
function fillModel() {
  const m = model(); if (!m) return;
  const digits = m.classes ? [["", "any digit"]].concat([...Array(m.classes).keys()].map((d) => [String(d), String(d)])) : [["", "any (unconditional)"]];
  for (const id of ["digit", "complete-digit"]) options($(id), digits);
  defaults();
}
function showValues() {
  $("guidance-value").textContent = Number($("guidance").value).toFixed(2); $("steps-value").textContent = $("steps").value;
}

// ---- the player: frames arrive as fast as the model makes them and are shown at the chosen speed -------------
function noiseText(f) { return f.noise === null || f.noise === undefined ? "" : `, noise ${Math.round(100 * f.noise)}%`; }
function frameText(f) {
  if (f.final) return `the finished digit${f.digit === undefined ? "" : ` (a ${f.digit})`}`;
  const t = f.t.toFixed(f.t < 2 ? 2 : 0), again = f.attempt ? `, resampling ${f.attempt + 1}` : "";
  return `step ${f.i + 1} of ${f.steps}: t = ${t}${noiseText(f)}${again}`;
}
function show(k) {
  if (!state.frames.length) return;
  k = Math.max(0, Math.min(k, state.frames.length - 1));
  const f = state.frames[k];
  state.shown = k;
  paint($("xt"), f.x_t); paint($("x0"), f.x0);
  $("scrub").value = String(k);
  $("frame").textContent = `frame ${k + 1} of ${state.frames.length}${state.streaming ? "+" : ""}: ${frameText(f)}`;
}
function setPlaying(playing) {
  state.playing = playing;
  clearTimeout(state.timer); state.timer = null;
  document.body.dataset.playing = playing ? "yes" : "no";
  $("play").textContent = playing ? "Pause" : "Replay";
  if (playing) tick();
}
// One frame on: the newest at once in real time, else the next one a `speed` milliseconds; when it has caught up
// with the stream it waits, and `record` calls it again as the next frame arrives.
function tick() {
  state.timer = null;
  if (!state.playing) return;
  const speed = Number($("speed").value);
  if (state.shown < state.frames.length - 1) {
    show(speed ? state.shown + 1 : state.frames.length - 1);
    if (speed) { state.timer = setTimeout(tick, speed); return; }
  }
  if (!state.streaming) setPlaying(false);
}
function record(frame) {
  state.frames.push(frame);
  $("scrub").max = String(state.frames.length - 1); $("scrub").disabled = false;
  if (state.playing && !state.timer) tick();
  else if (!state.playing) show(state.shown);  // the caption's count grows
}

// One digit from the engine: its frames go to the player as they come, the finished digit last.
async function run(call, body, onDone) {
  setBusy(true); say(""); document.body.dataset.state = "running";
  $("progress").className = "caption"; $("progress").textContent = engine.waiting;
  state.frames = []; state.shown = -1; state.streaming = true; state.chosen = null; $("scrub").max = "0";
  setPlaying(true);
  let computed = 0;
  const chosen = () => state.chosen === null ? "" : ` (seed ${body.seed} chose a ${state.chosen})`;
  try {
    const done = await call(body, (frame) => {
      if (frame.digit !== undefined) state.chosen = frame.digit;
      computed += 1;
      $("progress").textContent = `computing step ${frame.i + 1} of ${frame.steps}${chosen()}`;
      record(frame);
    });
    if (done.digit !== undefined) state.chosen = done.digit;
    state.last = done.image; state.streaming = false;
    record({ final: true, x_t: done.image, x0: done.image, digit: done.digit });
    $("progress").textContent = `computed ${computed} steps in ${done.seconds.toFixed(2)} s${chosen()}`;
    onDone && onDone(done.image); document.body.dataset.state = "done";
  } catch (err) {
    state.streaming = false;
    if (!state.timer) tick();  // caught up: the player stops; else it shows the steps that came, then stops
    const where = computed ? `after ${computed} step${computed > 1 ? "s" : ""}` : "before the first step";
    $("progress").className = "caption failed"; $("progress").textContent = `failed ${where}: ${err.message}`;
    say(err.message); document.body.dataset.state = "error";
  } finally { setBusy(false); }
}

// ---- drawing and completing ---------------------------------------------------------------------------------
// Two modes. Draw: a pen on a black canvas; the strokes are known and the model may fill anything else, the
// empty canvas included. Erase: a digit (the generated one, or the last completion) and an eraser; what is
// erased is filled, the rest is kept. Blue marks what the model will fill; amber what it filled.
const draw = $("draw"), dctx = draw.getContext("2d"), SIDE = 224;
const HELP = { draw: "Draw part of a digit with the mouse or a finger; the model fills everything else.",
               erase: "Rub out part of the digit; the model fills what you erase." };
function known() {
  const k = new Uint8Array(784);
  for (let i = 0; i < 784; i++) k[i] = state.mode === "draw" ? (state.ink[i] > 0 ? 1 : 0) : (state.erased[i] ? 0 : 1);
  return k;
}
function redraw() {
  const k = known(), img = dctx.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const v = state.ink[i], p = 4 * i;
    if (state.filled && state.filled[i]) { img.data[p] = 50 + 0.8 * v; img.data[p + 1] = 30 + 0.55 * v; img.data[p + 2] = 0.1 * v; }
    else if (!k[i]) { img.data[p] = 24; img.data[p + 1] = 44; img.data[p + 2] = 104; }
    else { img.data[p] = img.data[p + 1] = img.data[p + 2] = v; }
    img.data[p + 3] = 255;
  }
  const tmp = document.createElement("canvas"); tmp.width = tmp.height = 28; tmp.getContext("2d").putImageData(img, 0, 0);
  dctx.imageSmoothingEnabled = false; dctx.drawImage(tmp, 0, 0, SIDE, SIDE);
}
function setMode(mode, digit) {
  state.mode = mode; state.filled = null; state.erased = new Uint8Array(784);
  state.ink = digit ? new Uint8ClampedArray(digit) : new Uint8ClampedArray(784);
  $("mode-draw").setAttribute("aria-pressed", String(mode === "draw"));
  $("mode-erase").setAttribute("aria-pressed", String(mode === "erase"));
  $("mode-help").textContent = HELP[mode];
  redraw();
}
function stroke(event) {
  const r = draw.getBoundingClientRect(), x = (event.clientX - r.left) / r.width * 28, y = (event.clientY - r.top) / r.height * 28;
  state.filled = null;  // an edit starts the next completion
  for (let py = Math.floor(y - 2); py <= y + 2; py++) for (let px = Math.floor(x - 2); px <= x + 2; px++) {
    if (px < 0 || py < 0 || px > 27 || py > 27) continue;
    const d = Math.hypot(px + 0.5 - x, py + 0.5 - y), i = py * 28 + px;
    if (state.mode === "erase") { if (d < 1.8) { state.ink[i] = 0; state.erased[i] = 1; } }
    else state.ink[i] = Math.max(state.ink[i], 255 * Math.min(1, Math.max(0, 1.6 - d)));
  }
  redraw();
}
let drawing = false;
draw.addEventListener("pointerdown", (e) => { drawing = true; draw.setPointerCapture(e.pointerId); stroke(e); });
draw.addEventListener("pointermove", (e) => { if (drawing) stroke(e); });
draw.addEventListener("pointerup", () => { drawing = false; });

// ---- actions ------------------------------------------------------------------------------------------------
$("generate").onclick = () => run(engine.generate, settings());
$("next-seed").onclick = () => { $("seed").value = Number($("seed").value) + 1; run(engine.generate, settings()); };
$("complete").onclick = () => {
  const d = $("complete-digit").value, s = settings(), m = model(), mask = known();
  run(engine.inpaint, { ...s, digit: d === "" ? null : Number(d), image: Uint8Array.from(state.ink), mask,
                           steps: state.stepsTouched ? s.steps : state.mode === "draw" ? m.drawn_steps : m.inpaint_steps,
                           resample: m.inpaint_resample || 1 },
         (image) => { setMode("erase", image); state.filled = mask.map((v) => 1 - v); redraw();
                      say("the amber pixels are the model's; erase more and complete again, or draw anew", true); });
};
$("mode-draw").onclick = () => setMode("draw");
$("mode-erase").onclick = () => {
  if (!state.last) { say("generate a digit first, then erase part of it"); return; }
  setMode("erase", state.last); say("", true);
};
$("clear").onclick = () => setMode(state.mode, state.mode === "erase" ? state.last : null);
$("play").onclick = () => {
  if (state.playing) { setPlaying(false); return; }
  if (!state.frames.length) { say("generate a digit first; its steps can then be replayed", true); return; }
  if (state.shown >= state.frames.length - 1) show(0);
  setPlaying(true);
};
$("back").onclick = () => { setPlaying(false); show(state.shown - 1); };
$("forward").onclick = () => { setPlaying(false); show(state.shown + 1); };
$("scrub").oninput = () => { setPlaying(false); show(Number($("scrub").value)); };
$("grid").onclick = async () => {
  setBusy(true); say(""); document.body.dataset.state = "running";
  try {
    const url = URL.createObjectURL(await engine.grid({ ...settings(), n: Number($("grid-n").value) }));
    $("grid-image").src = url; $("grid-download").href = url; $("grid-download").style.display = "inline";
    document.body.dataset.state = "done";
  } catch (err) { say(err.message); document.body.dataset.state = "error"; }
  finally { setBusy(false); }
};
$("model").onchange = fillModel;
$("defaults").onclick = defaults;
$("guidance").oninput = showValues; $("steps").oninput = () => { state.stepsTouched = true; showValues(); };

engine.models().then((models) => {
  state.models = models;
  options($("model"), models.map((m) => [m.name, m.name]));
  fillModel(); setMode("draw"); document.body.dataset.state = "ready";
}).catch((err) => say(engine.unreachable + err.message));
