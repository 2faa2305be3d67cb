"""The web page served at ``/`` by ``fruitlens serve``: take or upload a photo, see the fruit.

One self-contained HTML document (inline CSS and JavaScript, no external resource, no CDN)
that works on a phone: ``<input type=file accept="image/*" capture="environment">`` opens
the camera, a second button picks a file from the gallery, and an image can also be dropped
or pasted. The image bytes are POSTed as the request body to ``v1/predict`` (relative, so
the page also works behind a path prefix); photos larger than ``MAX_SIDE`` pixels on a side
are first scaled down in the browser (JPEG), which saves upload time on mobile networks and
stays under the server's pixel budget. The reply is shown as the top label, the top-5 with
score bars, the ``info`` fields of the top label and the server timings; an error reply
``{"error": {"kind", "message"}}`` (or a network failure) is shown in ``#error``.

Stable element ids (used by tests/test_serve_page.py): ``#file`` (the camera/file input),
``#label`` (the top label, as the model names it), ``#top`` (one ``li`` per label, with
``data-label`` and ``data-score``), ``#info`` (the info fields of the top label, a ``dl``),
``#error`` (hidden unless there is an error). Server data is only ever inserted as text.
"""

from __future__ import annotations

__all__ = ["MAX_SIDE", "PAGE_HTML"]

#: Photos with a longer side than this are scaled down in the browser before upload.
MAX_SIDE = 1600

_CSS = """
:root { color-scheme: light dark; --accent: #2e7d32; --bar: #66bb6a; --bg2: rgba(127,127,127,.12);
  --err: #c62828; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
* { box-sizing: border-box; }
body { margin: 0; padding: 0 12px 32px; line-height: 1.4; }
main { max-width: 560px; margin: 0 auto; }
h1 { font-size: 1.3rem; margin: 16px 0 4px; } h1 span { color: var(--accent); }
.sub { margin: 0 0 12px; opacity: .75; font-size: .9rem; }
#drop { border: 2px dashed rgba(127,127,127,.5); border-radius: 14px; padding: 14px;
  text-align: center; transition: background .15s, border-color .15s; }
#drop.over { background: var(--bg2); border-color: var(--accent); }
.buttons { display: flex; gap: 10px; justify-content: center; flex-wrap: wrap; }
.btn { display: inline-block; min-height: 48px; padding: 12px 18px; border-radius: 10px;
  background: var(--accent); color: #fff; font-weight: 600; cursor: pointer; user-select: none;
  border: 2px solid var(--accent); }
.btn:focus-within { outline: 3px solid var(--bar); outline-offset: 2px; }
.btn.alt { background: transparent; color: inherit; }
.btn input { position: absolute; width: 1px; height: 1px; opacity: 0; overflow: hidden; }
.hint { font-size: .85rem; opacity: .7; margin: 10px 0 0; }
#preview { display: none; max-width: 100%; max-height: 40vh; margin: 12px auto 0;
  border-radius: 10px; }
#status { min-height: 1.4em; margin: 10px 0; font-size: .9rem; opacity: .8; }
#error { display: none; border-left: 5px solid var(--err); background: rgba(198,40,40,.1);
  padding: 10px 12px; border-radius: 6px; margin: 10px 0; }
#error b { color: var(--err); }
#result { display: none; }
#name { font-size: 1.6rem; font-weight: 700; margin: 8px 0 0; }
#label { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .9rem; opacity: .8; }
#top { list-style: none; padding: 0; margin: 12px 0; }
#top li { display: grid; grid-template-columns: minmax(0, 1fr) 4.2em; gap: 2px 8px;
  margin: 0 0 8px; font-size: .95rem; }
#top .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#top .pct { text-align: right; font-variant-numeric: tabular-nums; }
#top .track { grid-column: 1 / 3; height: 10px; border-radius: 5px; background: var(--bg2); }
#top .fill { height: 100%; border-radius: 5px; background: var(--bar); min-width: 2px; }
#top li:first-child .fill { background: var(--accent); }
#info { display: none; background: var(--bg2); border-radius: 10px; padding: 10px 14px;
  margin: 12px 0; }
#info dt { font-weight: 600; font-size: .8rem; text-transform: uppercase; opacity: .7;
  margin-top: 6px; }
#info dd { margin: 0 0 4px; }
#timings { font-size: .8rem; opacity: .6; }
"""

_BODY = """
<main>
<h1><span>fruit</span>lens</h1>
<p class="sub">Photograph a fruit or vegetable to recognise it.</p>
<div id="drop">
  <div class="buttons">
    <label class="btn">Take a photo
      <input id="file" type="file" accept="image/*" capture="environment"></label>
    <label class="btn alt">Choose a file
      <input id="pick" type="file" accept="image/*"></label>
  </div>
  <p class="hint">or drop an image here, or paste one</p>
  <img id="preview" alt="the photo being recognised">
</div>
<div id="status" role="status" aria-live="polite"></div>
<div id="error" role="alert"></div>
<section id="result" aria-live="polite">
  <div id="name"></div>
  <div><span id="label"></span> · <span id="score"></span></div>
  <ol id="top" aria-label="top 5"></ol>
  <dl id="info"></dl>
  <div id="timings"></div>
</section>
</main>
"""

_JS = """
"use strict";
const MAX_SIDE = %(max_side)d;
const $ = (id) => document.getElementById(id);
let busy = 0;

function show(id, on) { $(id).style.display = on ? "block" : "none"; }
function setStatus(text) { $("status").textContent = text || ""; }
function pct(score) {
  if (score > 0 && score < 0.001) return "< 0.1 %%";
  return (100 * score).toFixed(score >= 0.995 || score === 0 ? 0 : 1) + " %%";
}
function nice(key) { return key.replace(/_/g, " "); }

function showError(kind, message) {
  const box = $("error");
  box.textContent = "";
  const b = document.createElement("b");
  b.textContent = kind ? kind + ": " : "Error: ";
  box.append(b, document.createTextNode(message || "something went wrong"));
  box.dataset.kind = kind || "";
  box.style.display = "block";
}

function clearResult() {
  $("error").style.display = "none";
  $("error").textContent = "";
  show("result", false);
  for (const id of ["name", "label", "score", "top", "info", "timings"]) $(id).textContent = "";
}

function render(data) {
  const info = data.info && typeof data.info === "object" ? data.info : {};
  $("name").textContent = info.display_name || data.label;
  $("label").textContent = data.label;
  $("score").textContent = pct(data.score);
  const top = $("top");
  for (const t of data.top || []) {
    const li = document.createElement("li");
    li.dataset.label = t.label;
    li.dataset.score = String(t.score);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = t.label;
    name.title = t.label;
    const p = document.createElement("span");
    p.className = "pct";
    p.textContent = pct(t.score);
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = Math.max(0, Math.min(100, 100 * t.score)).toFixed(1) + "%%";
    track.append(fill);
    li.append(name, p, track);
    top.append(li);
  }
  renderInfo(info);
  const tm = data.timings_ms || {};
  $("timings").textContent = Object.keys(tm)
    .map((k) => nice(k) + " " + Number(tm[k]).toFixed(1) + " ms").join(" · ");
  show("result", true);
}

function renderInfo(info) {
  const dl = $("info");
  const keys = Object.keys(info).filter((k) => k !== "label" && info[k] !== null && info[k] !== "");
  keys.sort((a, b) => rank(a) - rank(b));
  for (const k of keys) {
    const dt = document.createElement("dt");
    dt.textContent = nice(k);
    const dd = document.createElement("dd");
    const v = info[k];
    dd.textContent = typeof v === "object" ? JSON.stringify(v) : String(v);
    dd.dataset.field = k;
    dl.append(dt, dd);
  }
  dl.style.display = keys.length ? "block" : "none";
}
function rank(k) { const i = ["display_name", "description"].indexOf(k); return i < 0 ? 2 : i; }

async function shrink(file) {
  // Large photos are scaled down (JPEG) before upload; anything else is sent as it is,
  // including files the browser cannot decode: the server says what is wrong with them.
  if (!window.createImageBitmap || file.size < 300000) return file;
  let bmp;
  try { bmp = await createImageBitmap(file); } catch (e) { return file; }
  const side = Math.max(bmp.width, bmp.height);
  if (side <= MAX_SIDE) { bmp.close && bmp.close(); return file; }
  const k = MAX_SIDE / side;
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bmp.width * k);
  canvas.height = Math.round(bmp.height * k);
  canvas.getContext("2d").drawImage(bmp, 0, 0, canvas.width, canvas.height);
  bmp.close && bmp.close();
  const blob = await new Promise((ok) => canvas.toBlob(ok, "image/jpeg", 0.92));
  return blob || file;
}

async function recognise(file) {
  if (!file) return;
  const run = ++busy;
  clearResult();
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.style.display = "block";
  preview.onerror = () => { preview.style.display = "none"; };
  setStatus("Recognising…");
  document.body.setAttribute("aria-busy", "true");
  try {
    const body = await shrink(file);
    const resp = await fetch("v1/predict", {
      method: "POST", body: body,
      headers: { "Content-Type": body.type || "application/octet-stream" },
    });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (run !== busy) return;
    if (!resp.ok || !data || data.error) {
      const err = (data && data.error) || {};
      showError(err.kind || "HTTP " + resp.status, err.message || resp.statusText || "no details");
    } else {
      render(data);
    }
  } catch (e) {
    if (run === busy) showError("network", "could not reach the server (" + e.message + ")");
  } finally {
    if (run === busy) { setStatus(""); document.body.removeAttribute("aria-busy"); }
  }
}

for (const id of ["file", "pick"]) {
  $(id).addEventListener("change", (ev) => {
    recognise(ev.target.files && ev.target.files[0]);
    ev.target.value = "";
  });
}
const drop = $("drop");
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  const f = ev.dataTransfer && ev.dataTransfer.files[0];
  if (f) recognise(f);
});
window.addEventListener("dragover", (ev) => ev.preventDefault());
window.addEventListener("drop", (ev) => ev.preventDefault());
document.addEventListener("paste", (ev) => {
  const items = (ev.clipboardData && ev.clipboardData.files) || [];
  if (items.length) recognise(items[0]);
});
function waitReady() {
  fetch("readyz").then((r) => {
    if (r.ok) { if (!busy) setStatus(""); return; }
    if (!busy) setStatus("The model is still loading…");
    setTimeout(waitReady, 2000);
  }).catch(() => {});
}
waitReady();
"""

PAGE_HTML = (
    "<!doctype html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
    '<meta name=viewport content="width=device-width, initial-scale=1">\n'
    '<link rel=icon href="data:,">\n<title>fruitlens</title>\n'
    f"<style>{_CSS}</style>\n</head>\n<body>{_BODY}"
    f"<script>{_JS % {'max_side': MAX_SIDE}}</script>\n</body>\n</html>\n"
)
"""The page, as one string (``text/html; charset=utf-8``)."""
