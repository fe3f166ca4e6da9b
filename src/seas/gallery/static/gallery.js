// SeaS gallery: shows a `seas generate` folder and records a person's accept / reject decisions.
//
// How the page works, in order:
//   1. start() fetches /api/catalog: every generated pair ("item"), the real training pairs of
//      each kind, the quality-control (qc) score names and the decisions saved so far.
//   2. render() draws one section per kind: the real pairs in a column on the left, the
//      generated pairs as a grid of cards on the right, after the filters and the sort.
//   3. A thumbnail is an <img> with a <canvas> on top; paintThumb() draws the mask on the
//      canvas, as an outline ("overlay" view) or filled white on black ("mask" view), once the
//      thumbnail comes near the screen.
//   4. The keyboard (onKey) and the buttons call decide(), which updates the page at once and
//      POSTs the decision to /api/decision; the server writes curation.json.
//
// Plain JavaScript, no library and no build step.
"use strict";

// ---------------------------------------------------------------------------- state

const state = {
  catalog: null,     // the JSON of /api/catalog
  items: new Map(),  // key "kind/index" -> item of the catalog
  decisions: {},     // key -> "accepted" | "rejected"; a key absent is undecided
  pending: new Map(),// key -> number of decisions not yet confirmed by the server
  view: "overlay",   // what thumbnails show: "overlay" | "image" | "mask"
  order: [],         // keys of the cards on the page, in page order
  cards: new Map(),  // key -> its card element
  focusKey: null,    // key of the card with the keyboard focus
  detailKey: null,   // key shown in the detail dialog, or null when it is closed
  saving: Promise.resolve(), // decisions are sent one after the other, in order
};

const VIEWS = ["overlay", "image", "mask"];
const OUTLINE = [255, 48, 48];  // colour of mask outlines (red)

// ---------------------------------------------------------------------------- small helpers

const $ = (id) => document.getElementById(id);

// el("div", {class: "x"}, ["text", child]) -> a new element.
function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  node.append(...[].concat(children).filter((c) => c !== null && c !== undefined));
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, {cache: "no-store"});
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// A message above the gallery; kind is "note", "warning" or "error".
function showMessage(text, kind = "note") {
  $("messages").append(el("p", {class: `message ${kind}`}, text));
}

function percent(fraction) {
  return fraction === null || fraction === undefined ? "–" : `${(100 * fraction).toFixed(fraction < 0.01 ? 2 : 1)}%`;
}

function formatScore(value) {
  return value === undefined || value === null ? "–" : Number(value).toPrecision(3);
}

// ---------------------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", start);

async function start() {
  try {
    state.catalog = await getJSON("/api/catalog");
  } catch (err) {
    $("gallery").replaceChildren(el("p", {class: "message error"}, `Cannot load the gallery: ${err.message}`));
    return;
  }
  const catalog = state.catalog;
  for (const item of catalog.items) state.items.set(item.key, item);
  state.decisions = catalog.decisions;
  $("folder").textContent = catalog.folder;
  for (const note of catalog.notes) showMessage(note, "warning");
  if (catalog.real_error) showMessage(`Real training pairs are not shown: ${catalog.real_error}.`, "warning");
  if (catalog.curation_error) showMessage(`Decisions cannot be saved: ${catalog.curation_error}`, "error");

  setupControls();
  render();
  document.addEventListener("keydown", onKey);
  window.addEventListener("focus", refreshDecisions);         // another tab may have decided
  window.addEventListener("resize", debounce(updateHeaderHeight, 200));
}

function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

// ---------------------------------------------------------------------------- controls

function setupControls() {
  const {kinds, qc_names: qcNames, items} = state.catalog;
  for (const kind of kinds) $("kind-filter").append(el("option", {value: kind}, kind));

  // Sort choices: index, mask area, then each qc score both ways.
  const sorts = [["index", "index"], ["area-desc", "mask area, largest first"], ["area-asc", "mask area, smallest first"]];
  for (const name of qcNames) {
    sorts.push([`qc-desc:${name}`, `${name}, highest first`], [`qc-asc:${name}`, `${name}, lowest first`]);
  }
  for (const [value, text] of sorts) $("sort").append(el("option", {value}, text));

  // The qc score filter and the qc status filter appear only when the manifest has them.
  if (qcNames.length) {
    $("qc-range").hidden = false;
    for (const name of qcNames) $("qc-name").append(el("option", {value: name}, name));
  }
  if (items.some((item) => item.qc_status)) $("qc-status-group").hidden = false;

  for (const id of ["kind-filter", "decision-filter", "qc-status-filter", "sort", "qc-name"]) {
    $(id).addEventListener("change", () => { render(); $(id).blur(); }); // blur: keys go to the gallery again
  }
  for (const id of ["qc-min", "qc-max"]) $(id).addEventListener("input", debounce(render, 250));

  for (const button of document.querySelectorAll("[data-view]")) {
    button.addEventListener("click", () => setView(button.dataset.view));
  }
  setupDetail();
}

function readFilters() {
  const number = (id) => ($(id).value === "" ? null : Number($(id).value));
  return {
    kind: $("kind-filter").value,
    decision: $("decision-filter").value,
    qcStatus: $("qc-status-filter").value,
    sort: $("sort").value,
    qcName: $("qc-name").value,
    qcMin: number("qc-min"),
    qcMax: number("qc-max"),
  };
}

function passesFilters(item, filters) {
  const decision = state.decisions[item.key] || "undecided";
  if (filters.kind && item.kind !== filters.kind) return false;
  if (filters.decision && decision !== filters.decision) return false;
  if (filters.qcStatus && item.qc_status !== filters.qcStatus) return false;
  if (filters.qcMin !== null || filters.qcMax !== null) {
    const score = item.qc[filters.qcName];
    if (score === undefined) return false;
    if (filters.qcMin !== null && score < filters.qcMin) return false;
    if (filters.qcMax !== null && score > filters.qcMax) return false;
  }
  return true;
}

// A compare function for Array.sort; items without the sorted value go last.
function comparator(sort) {
  const [how, name] = sort.split(":");
  const value = {
    "index": (item) => item.index,
    "area-desc": (item) => item.mask_area,
    "area-asc": (item) => item.mask_area,
    "qc-desc": (item) => item.qc[name],
    "qc-asc": (item) => item.qc[name],
  }[how];
  const sign = how.endsWith("desc") ? -1 : 1;
  return (a, b) => {
    const va = value(a), vb = value(b);
    const missingA = va === undefined || va === null, missingB = vb === undefined || vb === null;
    if (missingA || missingB) return missingA - missingB || a.index - b.index;
    return sign * (va - vb) || a.index - b.index;
  };
}

function setView(view) {
  state.view = view;
  document.body.classList.remove(...VIEWS.map((v) => `view-${v}`));
  document.body.classList.add(`view-${view}`);
  for (const button of document.querySelectorAll("[data-view]")) {
    button.setAttribute("aria-pressed", String(button.dataset.view === view));
  }
  repaintAll();
}

function cycleView() {
  setView(VIEWS[(VIEWS.indexOf(state.view) + 1) % VIEWS.length]);
}

// ---------------------------------------------------------------------------- gallery

function render() {
  const filters = readFilters();
  const shown = state.catalog.items.filter((item) => passesFilters(item, filters)).sort(comparator(filters.sort));
  const kinds = state.catalog.kinds.filter((kind) => !filters.kind || kind === filters.kind);

  state.order = [];
  state.cards.clear();
  const sections = kinds.map((kind) => {
    const ofKind = shown.filter((item) => item.kind === kind);
    state.order.push(...ofKind.map((item) => item.key));
    return renderSection(kind, ofKind, filters);
  });
  stopWatching($("gallery"));
  $("gallery").replaceChildren(...sections);
  if (!sections.length) $("gallery").append(el("p", {class: "muted"}, "The manifest lists no generated pair."));

  if (!state.order.includes(state.focusKey)) state.focusKey = state.order[0] || null;
  showFocus(false);
  updateCounts();
  updateHeaderHeight();
}

// The real pairs' column sticks below the tool bar, whose height depends on the window.
function updateHeaderHeight() {
  document.documentElement.style.setProperty("--header-height", `${$("toolbar").offsetHeight}px`);
}

function renderSection(kind, items, filters) {
  const total = state.catalog.items.filter((item) => item.kind === kind).length;
  const counts = el("span", {class: "muted"}, ` — ${items.length} of ${total} generated pairs shown`);
  const heading = el("h2", {}, [kind, counts]);
  const grid = el("div", {class: "grid"}, items.map((item) => makeCard(item, filters)));
  if (!items.length) grid.append(el("p", {class: "muted"}, "No generated pair of this kind matches the filters."));
  const body = el("div", {class: "kind-body"}, [renderRealPairs(kind), grid]);
  return el("section", {class: "kind", "data-kind": kind}, [heading, body]);
}

// The real training pairs of a kind, for comparison with the generated ones.
function renderRealPairs(kind) {
  const aside = el("aside", {class: "real"}, el("h3", {}, "Real training pairs"));
  const pairs = state.catalog.real[kind];
  if (state.catalog.real_error) {
    aside.append(el("p", {class: "muted"}, "Not available (see the note above)."));
  } else if (!pairs || !pairs.length) {
    aside.append(el("p", {class: "muted"}, "None in the run's split for this kind."));
  } else {
    for (const pair of pairs) {
      const thumb = makeThumb(pair.image, pair.mask, state.catalog.real_threshold, `real ${kind} ${pair.name}`);
      aside.append(el("figure", {class: "real-pair", title: pair.name}, [thumb, el("figcaption", {}, pair.name)]));
    }
  }
  return aside;
}

// One generated pair: thumbnail, caption and the three decision buttons.
function makeCard(item, filters) {
  const card = el("article", {class: "card", "data-key": item.key});
  const thumb = makeThumb(item.image, item.mask, "half", `${item.kind} #${item.index}`);
  thumb.addEventListener("click", () => { setFocus(item.key); openDetail(item.key); });

  const facts = [el("span", {class: "index"}, `#${item.index}`)];
  if (item.mask_area !== null) facts.push(el("span", {title: "mask area"}, percent(item.mask_area)));
  if (filters.qcName && item.qc[filters.qcName] !== undefined) {
    facts.push(el("span", {title: filters.qcName}, `${filters.qcName} ${formatScore(item.qc[filters.qcName])}`));
  }
  if (item.qc_status) {
    facts.push(el("span", {class: `qc ${item.qc_status}`, title: "automatic quality control"}, `QC ${item.qc_status}`));
  }

  const buttons = el("div", {class: "buttons"}, [
    decisionButton(item.key, "accepted", "✓", "accept (a)"),
    decisionButton(item.key, "rejected", "✗", "reject (r)"),
    decisionButton(item.key, "undecided", "↺", "undecided (u)"),
  ]);
  card.append(thumb, el("div", {class: "caption"}, facts), el("div", {class: "status"}), buttons);
  card.addEventListener("click", () => setFocus(item.key));
  state.cards.set(item.key, card);
  showDecision(item.key);
  return card;
}

function decisionButton(key, decision, text, title) {
  const button = el("button", {type: "button", class: decision, title, "aria-label": title}, text);
  button.addEventListener("click", (event) => { event.stopPropagation(); setFocus(key); decide(key, decision); });
  return button;
}

// ---------------------------------------------------------------------------- thumbnails and masks

// Thumbnails are painted when they come near the screen and forgotten (their canvas memory
// freed) when they leave it, so that a gallery of thousands of pairs stays light and quick.
const THUMB_PIXELS = 320;  // longest side of a thumbnail's mask canvas (CSS scales it to fit)
const DETAIL_PIXELS = 960; // the same in the detail dialog
const nearScreen = new Set(); // thumbnails near the screen
const thumbWatcher = new IntersectionObserver(onThumbsMoved, {rootMargin: "600px 0px"});

function onThumbsMoved(entries) {
  for (const entry of entries) {
    const thumb = entry.target;
    if (entry.isIntersecting) {
      nearScreen.add(thumb);
      paintThumb(thumb);
    } else {
      nearScreen.delete(thumb);
      forgetThumb(thumb);
    }
  }
}

// An image with its mask drawn on a canvas above it. `threshold` is how the mask file is read:
// "half" (a pixel is defect when at least half of the range) or "nonzero".
// `fixedView` makes the thumbnail ignore the page's view (the detail dialog uses it).
function makeThumb(imageUrl, maskUrl, threshold, alt, fixedView = null, pixels = THUMB_PIXELS) {
  const img = el("img", {src: imageUrl, alt, loading: "lazy", decoding: "async"});
  const canvas = el("canvas", {class: "mask-layer", "aria-hidden": "true"});
  const thumb = el("div", {class: "thumb"}, [img, canvas]);
  if (fixedView) thumb.dataset.view = fixedView;
  if (maskUrl) {
    thumb.dataset.mask = maskUrl;
    thumb.dataset.threshold = threshold;
    thumb.dataset.pixels = pixels;
    thumbWatcher.observe(thumb);
  } else {
    thumb.classList.add("no-mask");
  }
  img.addEventListener("error", () => thumb.classList.add("broken"));
  return thumb;
}

// Before thumbnails are removed from the page.
function stopWatching(container) {
  for (const thumb of container.querySelectorAll(".thumb[data-mask]")) {
    thumbWatcher.unobserve(thumb);
    nearScreen.delete(thumb);
  }
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load ${url}`));
    img.src = url;
  });
}

// Draw the mask of a thumbnail on its canvas, in the current view (nothing to do if done).
async function paintThumb(thumb) {
  if (thumb.paintedView === (thumb.dataset.view || state.view)) return;
  if (!thumb.maskPixels) {
    let image;
    try {
      image = await loadImage(thumb.dataset.mask);
    } catch (err) {
      thumb.classList.add("broken");
      return;
    }
    if (!nearScreen.has(thumb)) return; // scrolled away meanwhile
    thumb.maskPixels = rasteriseMask(image, Number(thumb.dataset.pixels), thumb.dataset.threshold);
  }
  const view = thumb.dataset.view || state.view; // read again: it may have changed meanwhile
  drawMask(thumb.querySelector("canvas"), thumb.maskPixels, view);
  thumb.paintedView = view;
  thumb.classList.add("painted");
}

function forgetThumb(thumb) {
  const canvas = thumb.querySelector("canvas");
  canvas.width = canvas.height = 0;
  thumb.maskPixels = null;
  thumb.paintedView = null;
  thumb.classList.remove("painted");
}

// After a change of view: the thumbnails near the screen now, the others when they get there.
function repaintAll() {
  for (const thumb of nearScreen) paintThumb(thumb);
}

// The mask image -> {width, height, on}, `longest` pixels on its longest side: `on[i]` is 1
// where pixel i shows defect. The mask is binarised at its own resolution first, then scaled;
// when it is shrunk, a pixel is "on" if any defect pixel falls in it: tiny defects stay visible.
function rasteriseMask(maskImage, longest, threshold) {
  const scale = longest / Math.max(maskImage.naturalWidth, maskImage.naturalHeight);
  const width = Math.max(1, Math.round(maskImage.naturalWidth * scale));
  const height = Math.max(1, Math.round(maskImage.naturalHeight * scale));
  const natural = document.createElement("canvas");
  natural.width = maskImage.naturalWidth;
  natural.height = maskImage.naturalHeight;
  const nctx = natural.getContext("2d", {willReadFrequently: true});
  nctx.drawImage(maskImage, 0, 0);
  const pixels = nctx.getImageData(0, 0, natural.width, natural.height);
  binarise(pixels.data, threshold);
  nctx.putImageData(pixels, 0, 0);

  const scaled = document.createElement("canvas");
  scaled.width = width;
  scaled.height = height;
  const sctx = scaled.getContext("2d", {willReadFrequently: true});
  sctx.imageSmoothingEnabled = width < natural.width; // averaging when shrinking, sharp when enlarging
  sctx.imageSmoothingQuality = "high";
  sctx.drawImage(natural, 0, 0, width, height);
  const data = sctx.getImageData(0, 0, width, height).data;
  const on = new Uint8Array(width * height);
  for (let i = 0; i < on.length; i++) on[i] = data[4 * i] > 0 ? 1 : 0;
  return {width, height, on};
}

// In place: RGBA pixels -> white where the mask is on, black elsewhere (rules of seas' read_mask).
function binarise(data, threshold) {
  let top = 0;
  for (let i = 0; i < data.length; i += 4) top = Math.max(top, data[i]);
  const limit = threshold === "nonzero" ? 1 : (top <= 1 ? 1 : 128); // 0/1 masks: 1 is defect
  for (let i = 0; i < data.length; i += 4) {
    const value = data[i] >= limit ? 255 : 0;
    data[i] = data[i + 1] = data[i + 2] = value;
    data[i + 3] = 255;
  }
}

// Paint a rasterised mask: filled (white on black) for the "mask" view, else its outline.
function drawMask(canvas, mask, view) {
  const {width, height, on} = mask;
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(width, height); // all transparent
  const [r, g, b] = OUTLINE;
  const radius = Math.max(1, Math.round(Math.max(width, height) / 110)); // about 2 pixels on screen
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (view === "mask") {
        const v = on[i] ? 255 : 0;
        setPixel(out.data, i, v, v, v, 255);
      } else if (on[i]) {
        const alpha = nearEdge(on, width, height, x, y, radius) ? 255 : 40; // the outline, a faint tint inside
        setPixel(out.data, i, r, g, b, alpha);
      }
    }
  }
  ctx.putImageData(out, 0, 0);
}

function setPixel(data, i, r, g, b, a) {
  data[4 * i] = r;
  data[4 * i + 1] = g;
  data[4 * i + 2] = b;
  data[4 * i + 3] = a;
}

// Whether the "on" pixel (x, y) has an "off" pixel (or the image border) within `radius`
// pixels: outlines are radius + 1 pixels thick, visible on small thumbnails too.
function nearEdge(on, width, height, x, y, radius) {
  for (let dy = -radius; dy <= radius; dy++) {
    for (let dx = -radius; dx <= radius; dx++) {
      const nx = x + dx, ny = y + dy;
      if (nx < 0 || ny < 0 || nx >= width || ny >= height || !on[ny * width + nx]) return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------- focus

function setFocus(key) {
  if (!key) return;
  state.focusKey = key;
  showFocus(true);
}

function showFocus(scroll) {
  for (const card of document.querySelectorAll(".card.focused")) card.classList.remove("focused");
  const card = state.cards.get(state.focusKey);
  if (!card) return;
  card.classList.add("focused");
  if (scroll) card.scrollIntoView({block: "nearest"});
}

// Move the focus by `delta` cards in page order (and follow it in the detail dialog).
function moveFocus(delta) {
  if (!state.order.length) return;
  const at = state.order.indexOf(state.focusKey);
  const next = Math.min(Math.max(at + delta, 0), state.order.length - 1);
  setFocus(state.order[next]);
  if (state.detailKey) openDetail(state.focusKey);
}

// Up / down: by as many cards as the focused card's grid has columns.
function moveFocusRow(direction) {
  const card = state.cards.get(state.focusKey);
  if (!card) return moveFocus(direction);
  const columns = getComputedStyle(card.parentElement).gridTemplateColumns.split(" ").length;
  moveFocus(direction * columns);
}

// ---------------------------------------------------------------------------- decisions

// Record a decision ("accepted", "rejected", or "undecided" to clear it) for one pair.
// The page changes at once; the request follows. `advance` moves the focus to the next card.
function decide(key, decision, advance = false) {
  if (!key) return;
  const before = state.decisions[key];
  setLocalDecision(key, decision);
  if (advance) moveFocus(+1);
  state.pending.set(key, (state.pending.get(key) || 0) + 1);
  state.saving = state.saving.then(() => save(key, decision, before));
}

async function save(key, decision, before) {
  try {
    const reply = await postJSON("/api/decision", {key, decision});
    mergeDecisions(reply.decisions, key);
  } catch (err) {
    setLocalDecision(key, before);
    showMessage(`The decision on ${key} was not saved: ${err.message}`, "error");
  } finally {
    const left = state.pending.get(key) - 1;
    if (left > 0) state.pending.set(key, left); else state.pending.delete(key);
  }
}

function setLocalDecision(key, decision) {
  if (decision === "accepted" || decision === "rejected") state.decisions[key] = decision;
  else delete state.decisions[key];
  showDecision(key);
  updateCounts();
}

// Take the server's decisions (they include other tabs'), except for keys whose newer
// decision is still on its way (`justSaved` is the key this reply confirms).
function mergeDecisions(fromServer, justSaved = null) {
  const keep = new Map();
  for (const key of state.pending.keys()) {
    if (key !== justSaved || state.pending.get(key) > 1) keep.set(key, state.decisions[key]);
  }
  const old = state.decisions;
  state.decisions = {...fromServer};
  for (const [key, value] of keep) {
    if (value) state.decisions[key] = value; else delete state.decisions[key];
  }
  for (const key of new Set([...Object.keys(old), ...Object.keys(state.decisions)])) {
    if (old[key] !== state.decisions[key]) showDecision(key);
  }
  updateCounts();
}

async function refreshDecisions() {
  try {
    const reply = await getJSON("/api/curation");
    mergeDecisions(reply.decisions);
  } catch (err) { /* the server is gone: the next decision will say so */ }
}

// Show a key's decision on its card and, when it is open, in the detail dialog.
function showDecision(key) {
  const decision = state.decisions[key] || "undecided";
  const card = state.cards.get(key);
  if (card) {
    card.classList.remove("accepted", "rejected", "undecided");
    card.classList.add(decision);
    card.querySelector(".status").textContent = decision;
  }
  if (state.detailKey === key) {
    $("detail-status").textContent = decision;
    $("detail-status").className = `status ${decision}`;
  }
}

function updateCounts() {
  const total = state.catalog.items.length;
  const values = Object.entries(state.decisions).filter(([key]) => state.items.has(key)).map(([, v]) => v);
  const accepted = values.filter((v) => v === "accepted").length;
  const rejected = values.filter((v) => v === "rejected").length;
  $("counts").replaceChildren(
    el("span", {}, `${state.order.length} of ${total} shown · `),
    el("span", {class: "accepted"}, `${accepted} accepted`), " · ",
    el("span", {class: "rejected"}, `${rejected} rejected`), " · ",
    el("span", {}, `${total - accepted - rejected} undecided`),
  );
}

// ---------------------------------------------------------------------------- detail dialog

function setupDetail() {
  const dialog = $("detail");
  dialog.addEventListener("close", () => { state.detailKey = null; showFocus(true); });
  dialog.addEventListener("click", (event) => { if (event.target === dialog) dialog.close(); }); // the backdrop
  for (const button of dialog.querySelectorAll("[data-action]")) {
    button.addEventListener("click", () => {
      const action = button.dataset.action;
      if (action === "close") dialog.close();
      else if (action === "prev") moveFocus(-1);
      else if (action === "next") moveFocus(+1);
      else decide(state.detailKey, action);
    });
  }
}

function openDetail(key) {
  const item = state.items.get(key);
  if (!item) return;
  state.detailKey = key;
  $("detail-title").textContent = `${item.kind} #${item.index}`;
  showDecision(key);

  const big = (alt, view) => makeThumb(item.image, item.mask, "half", alt, view, DETAIL_PIXELS);
  const figures = [figure("Generated image and mask outline", big("generated image", "overlay"))];
  if (item.mask) figures.push(figure("Mask", big("mask", "mask")));
  if (item.reference) {
    const reference = el("img", {src: item.reference, alt: "reference normal image"});
    figures.push(figure("Reference normal image (start of the sampler)", reference));
  }
  if (item.prob) figures.push(figure("Mask probability map", el("img", {src: item.prob, alt: "mask probability map"})));
  stopWatching($("detail-figures"));
  $("detail-figures").replaceChildren(...figures);
  const row = ([name, value]) => el("tr", {}, [el("th", {}, name), el("td", {}, String(value))]);
  $("detail-table").replaceChildren(...detailRows(item).map(row));

  if (!$("detail").open) {
    $("detail").showModal();
    $("detail").focus(); // not its first button: Enter or space would press it
  }
}

function figure(caption, content) {
  return el("figure", {}, [content, el("figcaption", {}, caption)]);
}

// [name, value] rows of the detail table: the manifest's fields, qc scores included.
function detailRows(item) {
  const rows = [["kind", item.kind], ["index", item.index]];
  if (item.prompt !== null) rows.push(["prompt", item.prompt]);
  if (item.seed !== null) rows.push(["seed", item.seed]);
  rows.push(["mask area", item.mask ? percent(item.mask_area) : "no mask (normal image)"]);
  for (const [name, score] of Object.entries(item.qc)) rows.push([`qc: ${name}`, formatScore(score)]);
  if (item.qc_status) rows.push(["qc status", item.qc_status]);
  rows.push(["reference", item.reference_path || "–"]);
  for (const [name, value] of Object.entries(item.details)) rows.push([name, value === null ? "–" : value]);
  return rows;
}

// ---------------------------------------------------------------------------- keyboard

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.closest("input, select, textarea")) return;          // typing in a control
  if (event.target.closest("button") && (event.key === "Enter" || event.key === " ")) return; // pressing a button
  const inDetail = state.detailKey !== null;
  const key = inDetail ? state.detailKey : state.focusKey;
  switch (event.key) {
    case "ArrowRight": case "j": moveFocus(+1); break;
    case "ArrowLeft": case "k": moveFocus(-1); break;
    case "ArrowDown": if (inDetail) moveFocus(+1); else moveFocusRow(+1); break;
    case "ArrowUp": if (inDetail) moveFocus(-1); else moveFocusRow(-1); break;
    case "a": decide(key, "accepted", !inDetail); break;
    case "r": decide(key, "rejected", !inDetail); break;
    case "u": decide(key, "undecided"); break;
    case "Enter": case " ": if (!inDetail) openDetail(key); break;
    case "v": cycleView(); break;
    default: return; // not ours: let the browser have it (Esc closes the dialog)
  }
  event.preventDefault();
}
