// The pose editor: the photo with a skeleton over it; joints dragged with a mouse or a finger (pointer events),
// removed or placed. Runs as gr.HTML's js_on_load: `element`, `props` and `watch` come from Gradio. Every change
// is written as JSON into the joint-edits textbox (#pose-editor-joints), which the page folds into `pose_edits`.
const BODY = ["nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
  "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
  "left_eye", "right_ear", "left_ear"];
const BONES = [[1, 2], [1, 5], [2, 3], [3, 4], [5, 6], [6, 7], [1, 8], [8, 9], [9, 10], [1, 11], [11, 12],
  [12, 13], [1, 0], [0, 14], [14, 16], [0, 15], [15, 17]];
const CARRIES = { 4: "right_hand", 7: "left_hand", 0: "face" };
const GRAB_PX = 22;
// Looked up on use: Gradio may render the template again when the value changes.
const $ = selector => element.querySelector(selector);
let state = null, image = null, frame = -1, tool = "move", dragging = null;
let edits = { reference: {}, frames: {} };

function pose() { return frame < 0 ? state.reference : state.frames[frame]; }
function present(p) { return p[0] !== -1 || p[1] !== -1; }
function groupPoints(p, name) {
  if (name === "face") return p.face || [];
  return (p.hands || [])[name === "left_hand" ? 0 : 1] || [];
}
function centre(points) {
  const live = points.filter(present);
  if (!live.length) return null;
  return [live.reduce((s, q) => s + q[0], 0) / live.length, live.reduce((s, q) => s + q[1], 0) / live.length];
}
function handles(p) {
  const out = [];
  p.body.forEach((q, j) => { if (present(q)) out.push({ name: BODY[j], at: q }); });
  for (const g of ["left_hand", "right_hand", "face"]) { const c = centre(groupPoints(p, g)); if (c) out.push({ name: g, at: c }); }
  return out;
}
function shiftGroup(p, name, dx, dy) { groupPoints(p, name).forEach(q => { if (present(q)) { q[0] += dx; q[1] += dy; } }); }
function moveTo(p, name, x, y) {
  const j = BODY.indexOf(name);
  if (j < 0) { const c = centre(groupPoints(p, name)); if (c) shiftGroup(p, name, x - c[0], y - c[1]); return; }
  const q = p.body[j];
  if (present(q) && CARRIES[j]) shiftGroup(p, CARRIES[j], x - q[0], y - q[1]);
  p.body[j] = [x, y];
}
function remove(p, name) {
  const j = BODY.indexOf(name);
  if (j >= 0) p.body[j] = [-1, -1]; else groupPoints(p, name).forEach(q => { q[0] = -1; q[1] = -1; });
}
function record(name, value) {
  const rounded = value && [Math.round(value[0] * 1e4) / 1e4, Math.round(value[1] * 1e4) / 1e4];
  if (frame < 0) edits.reference[name] = rounded;
  else (edits.frames[frame] = edits.frames[frame] || {})[name] = rounded;
  const out = {};
  if (Object.keys(edits.reference).length) out.reference = edits.reference;
  const frames = Object.keys(edits.frames).map(Number).sort((a, b) => a - b)
    .map(f => ({ frame: f, joints: edits.frames[f] }));
  if (frames.length) out.frames = frames;
  const box = document.querySelector("#pose-editor-joints textarea, #pose-editor-joints input");
  if (box) { box.value = JSON.stringify(out); box.dispatchEvent(new Event("input", { bubbles: true })); }
}
function draw() {
  const canvas = $("canvas"), ctx = canvas.getContext("2d"), frameLabel = $(".pe-frame-label");
  const placeSelect = $(".pe-place");
  element.querySelector(".pe-empty").style.display = state ? "none" : "";
  if (!state) { canvas.width = canvas.height = 0; return; }
  const w = Math.max(120, element.clientWidth || 480), h = Math.round(w * state.height / state.width);
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  ctx.clearRect(0, 0, w, h);
  if (image && image.complete) ctx.drawImage(image, 0, 0, w, h);
  const p = pose();
  ctx.lineWidth = 3; ctx.strokeStyle = "rgba(255,200,0,0.9)";
  for (const [a, b] of BONES) {
    if (!present(p.body[a]) || !present(p.body[b])) continue;
    ctx.beginPath(); ctx.moveTo(p.body[a][0] * w, p.body[a][1] * h); ctx.lineTo(p.body[b][0] * w, p.body[b][1] * h); ctx.stroke();
  }
  ctx.fillStyle = "rgba(0,200,255,0.8)";
  for (const g of ["left_hand", "right_hand", "face"]) for (const q of groupPoints(p, g)) if (present(q)) ctx.fillRect(q[0] * w - 1, q[1] * h - 1, 2, 2);
  for (const hnd of handles(p)) {
    ctx.beginPath(); ctx.arc(hnd.at[0] * w, hnd.at[1] * h, BODY.includes(hnd.name) ? 6 : 8, 0, 2 * Math.PI);
    ctx.fillStyle = BODY.includes(hnd.name) ? "#ff3b30" : "rgba(0,200,255,0.9)"; ctx.fill();
  }
  frameLabel.textContent = frame < 0 ? "Photo's skeleton" : `Frame ${frame + 1} of ${state.frames.length}`;
  const options = '<option value="">Place a missing joint…</option>' + BODY.filter((n, j) => !present(p.body[j]))
    .map(n => `<option value="${n}">${n.replace("_", " ")}</option>`).join("");
  if (placeSelect.dataset.options !== options) { placeSelect.innerHTML = options; placeSelect.dataset.options = options; }
}
function at(event) {
  const r = $("canvas").getBoundingClientRect();
  return [(event.clientX - r.left) / r.width, (event.clientY - r.top) / r.height];
}
function nearest(xy) {
  const canvas = $("canvas");
  let best = null, bestD = GRAB_PX;
  for (const hnd of handles(pose())) {
    const d = Math.hypot((hnd.at[0] - xy[0]) * canvas.width, (hnd.at[1] - xy[1]) * canvas.height);
    if (d < bestD) { best = hnd.name; bestD = d; }
  }
  return best;
}
const onCanvas = handler => event => { if (event.target.tagName === "CANVAS") handler(event); };
element.addEventListener("pointerdown", onCanvas(event => {
  if (!state) return;
  const xy = at(event), placing = $(".pe-place").value;
  if (placing) { moveTo(pose(), placing, xy[0], xy[1]); record(placing, xy); draw(); return; }
  const name = nearest(xy);
  if (!name) return;
  event.preventDefault();
  if (tool === "remove") { remove(pose(), name); record(name, null); draw(); return; }
  dragging = name; event.target.setPointerCapture(event.pointerId);
}));
element.addEventListener("pointermove", onCanvas(event => {
  if (!dragging) return;
  event.preventDefault();
  const xy = at(event); moveTo(pose(), dragging, xy[0], xy[1]); draw();
}));
function drop(event) {
  if (!dragging) return;
  const xy = at(event); moveTo(pose(), dragging, xy[0], xy[1]); record(dragging, xy); dragging = null; draw();
}
element.addEventListener("pointerup", onCanvas(drop));
element.addEventListener("pointercancel", () => { dragging = null; draw(); });
element.addEventListener("input", event => {
  if (event.target.classList.contains("pe-frame")) { frame = Number(event.target.value) - 1; draw(); }
});
element.addEventListener("click", event => {
  const button = event.target.closest(".pe-mode");
  if (!button) return;
  tool = button.dataset.tool;
  element.querySelectorAll(".pe-mode").forEach(o => o.classList.toggle("pe-on", o === button));
});
function load() {
  if (!props.value) { state = null; draw(); return; }
  state = JSON.parse(props.value);
  edits = state.edits || { reference: {}, frames: {} };
  const slider = $(".pe-frame");
  slider.max = String(state.frames.length); slider.value = String(Math.min(frame + 1, state.frames.length));
  frame = Number(slider.value) - 1;
  image = new Image(); image.onload = draw; image.src = state.image;
  draw();
}
watch("value", load);
new ResizeObserver(draw).observe(element);
load();
