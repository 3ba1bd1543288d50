// SteerNPC Studio: the page over the HTTP/SSE gateway (/api/v1). Plain JavaScript, no
// dependencies, nothing loaded from the network.
"use strict";

const API = "/api/v1";
const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
};

const state = {
  key: sessionStorage.getItem("steernpc-key") || "",
  ready: false,
  characters: [],
  character: null, // the full character (GET /characters/{id}) shown
  mood: "",
  steer: {}, // slider values the designer set (the session steer layer)
  resolved: null,
  chat: { sessionId: null, synced: null, interaction: null },
  profiles: { a: {}, b: {} },
  edited: { a: false, b: false }, // profile A follows the sliders until it is edited by hand
  editor: { path: null, saved: "", timer: null },
};

// -- HTTP ------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (state.key) h["Authorization"] = "Bearer " + state.key;
  return h;
}

async function api(method, path, body) {
  const response = await fetch(API + path, {
    method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) askForKey();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// POST .../say and read its Server-Sent Events: onEvent(kind, data) for each delta, done or error.
async function streamSay(sessionId, body, onEvent) {
  const response = await fetch(`${API}/sessions/${encodeURIComponent(sessionId)}/say`, {
    method: "POST", headers: headers(true), body: JSON.stringify(body),
  });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => ({})));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r\n\r\n|\n\n|\r\r/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^(\r\n\r\n|\n\n|\r\r)/, "");
      let kind = "message";
      const data = [];
      for (const line of block.split(/\r\n|\n|\r/)) {
        if (line.startsWith(":")) continue; // a keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") kind = val;
        else if (field === "data") data.push(val);
      }
      if (data.length) onEvent(kind, JSON.parse(data.join("\n")));
    }
  }
}

const newId = () => Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");

function showError(id, error) {
  const node = $(id);
  if (!error) { node.hidden = true; node.textContent = ""; return; }
  node.hidden = false;
  node.textContent = error.status ? `${error.status} ${error.body.error ? error.body.error.code : ""}: ${error.message}` : String(error.message || error);
}

function askForKey() {
  $("key-form").hidden = false;
  $("api-key").focus();
}

// -- model status --------------------------------------------------------------------------------------
async function pollStatus() {
  const box = $("model-status");
  try {
    const s = await api("GET", "/status");
    state.ready = s.ready;
    if (s.ready) {
      box.dataset.state = "ready";
      $("model-status-text").textContent = `Model ready · ${s.model} · ${s.backend} · ${s.format} format · loaded in ${s.elapsed_s.toFixed(1)} s`;
    } else if (s.error) {
      box.dataset.state = "error";
      $("model-status-text").textContent = `Model failed to load: ${s.error}`;
    } else {
      box.dataset.state = "loading";
      $("model-status-text").textContent = `Loading the model (${s.model}, ${s.backend})… ${s.elapsed_s.toFixed(1)} s · ${s.phase}`;
    }
    document.body.classList.toggle("model-loading", !s.ready);
    for (const id of ["chat-send", "compare-run"]) $(id).disabled = !s.ready;
    if (!s.ready) setTimeout(pollStatus, 300);
  } catch (error) {
    box.dataset.state = "error";
    $("model-status-text").textContent = error.status === 401 ? "API key needed" : `No answer from the server: ${error.message}`;
    setTimeout(pollStatus, 1000);
  }
}

// -- characters ------------------------------------------------------------------------------------------
async function loadCharacters(keep) {
  const data = await api("GET", "/characters");
  state.characters = data.characters;
  const list = $("character-list");
  list.replaceChildren(...data.characters.map((c) => el("li", {
    dataset: { id: c.id }, class: state.character && c.id === state.character.id ? "active" : "",
    onclick: () => selectCharacter(c.id),
  }, c.name, el("span", { class: "role" }, c.role))));
  const personas = await api("GET", "/personas").catch(() => null);
  const problems = $("registry-problems");
  problems.hidden = !(personas && personas.problems.length);
  if (personas) problems.textContent = personas.problems.join("\n");
  const current = keep && state.character ? state.character.id : data.characters.length ? data.characters[0].id : null;
  if (current) await selectCharacter(current, keep);
}

async function selectCharacter(id, keepSteering) {
  const character = await api("GET", `/characters/${encodeURIComponent(id)}`);
  const changed = !state.character || state.character.id !== id;
  state.character = character;
  if (changed || !keepSteering) {
    state.mood = "";
    state.steer = {};
    state.chat = { sessionId: null, synced: null, interaction: null };
    $("chat-log").replaceChildren();
    $("chat-session").textContent = "no session yet";
  }
  for (const li of $("character-list").children) li.classList.toggle("active", li.dataset.id === id);
  renderCard();
  renderSteering();
  await resolve();
  copyProfile("a");
  copyProfile("b");
  if (changed) await openEditorFile(character.studio.file);
}

function renderCard() {
  const c = state.character;
  const s = c.studio;
  const row = (k, v) => el("tr", {}, el("th", {}, k), el("td", {}, v));
  const moods = Object.entries(s.moods);
  const limits = Object.entries(s.limits);
  $("character-head").replaceChildren(
    el("h2", {}, c.name),
    el("p", { class: "role" }, c.role),
    c.greeting ? el("p", { class: "greeting" }, el("em", {}, `“${c.greeting}”`)) : null,
  );
  $("character-card").replaceChildren(
    el("h3", {}, "Card"),
    el("table", { class: "kv", id: "profile" },
      el("tr", {}, el("th", {}, "profile"), el("td", {}, c.schema.map((a) => `${a.name} ${c.attributes[a.name]}`).join(" · "))),
      row("schema", `${s.schema_name} (${c.schema.map((a) => `${a.name} ${a.min}..${a.max}`).join(", ")})`)),
    el("details", { open: "" }, el("summary", {}, `Moods (${moods.length})`),
      moods.length ? el("table", { class: "kv", id: "moods" }, moods.map(([m, v]) => row(m, Object.entries(v).map(([k, x]) => `${k} ${x}`).join(", "))))
        : el("p", { class: "muted small" }, "none")),
    el("details", { open: "" }, el("summary", {}, `Limits (${limits.length})`),
      limits.length ? el("table", { class: "kv", id: "limits" }, limits.map(([k, v]) => row(k, `${v.min}..${v.max}`)))
        : el("p", { class: "muted small" }, "none")),
    el("details", {}, el("summary", {}, "Card (the system text)"), el("pre", {}, s.card)),
    el("p", { class: "muted small" }, s.source),
  );
}

// -- steering: sliders, mood and the resolved vector ------------------------------------------------------------
function renderSteering() {
  const c = state.character;
  const select = $("mood-select");
  select.replaceChildren(el("option", { value: "" }, "(none)"), ...c.moods.map((m) => el("option", { value: m }, m)));
  select.value = state.mood;
  $("sliders").replaceChildren(...c.schema.map((spec) => {
    const input = el("input", { type: "range", min: spec.min, max: spec.max, step: 1, id: `slider-${spec.name}`, "aria-label": spec.name });
    const value = el("span", { class: "value" });
    const row = el("div", { class: "slider", dataset: { name: spec.name }, title: spec.description || spec.name },
      el("span", { class: "name" }, spec.name), input, value,
      el("button", { type: "button", class: "unset", title: "back to the persona's value", onclick: () => { delete state.steer[spec.name]; resolve(); } }, "×"));
    input.addEventListener("input", () => { state.steer[spec.name] = Number(input.value); value.textContent = input.value; row.classList.add("steered"); scheduleResolve(); });
    return row;
  }));
}

let resolveTimer = null;
function scheduleResolve() {
  clearTimeout(resolveTimer);
  resolveTimer = setTimeout(resolve, 60);
}

async function resolve() {
  const c = state.character;
  if (!c) return;
  try {
    state.resolved = await api("POST", `/characters/${encodeURIComponent(c.id)}/resolve`, { mood: state.mood, steer: state.steer });
    showError("resolve-error", null);
  } catch (error) {
    showError("resolve-error", error);
    return;
  }
  const r = state.resolved;
  const before = r.layers[r.layers.length - 2].vector; // after every layer but limits
  for (const row of $("sliders").children) {
    const name = row.dataset.name;
    const steered = name in state.steer;
    row.classList.toggle("steered", steered);
    const input = row.querySelector("input");
    input.value = steered ? state.steer[name] : before[name];
    row.querySelector(".value").textContent = input.value;
  }
  const shown = r.layers.filter((l) => l.name !== "override");
  const table = $("resolved");
  const titles = { defaults: "default", attributes: "persona", mood: "mood", steer: "steer", limits: "applied" };
  table.replaceChildren(
    el("tr", {}, el("th", {}, "attribute"), shown.map((l) => el("th", {}, titles[l.name]))),
    ...c.schema.map((spec) => el("tr", { dataset: { name: spec.name } }, el("td", {}, spec.name), shown.map((layer, i) => {
      const value = layer.vector[spec.name];
      const prev = i ? shown[i - 1].vector[spec.name] : null;
      if (layer.name === "limits") {
        const clamp = r.clamped[spec.name];
        return el("td", { class: clamp ? "final clamped" : "final", dataset: { layer: "applied" }, title: clamp ? `clamped by limits ${clamp.limit}` : "" },
          clamp ? `${clamp.from}→${clamp.to}` : value);
      }
      const set = i === 0 || value !== prev || (layer.name === "steer" && spec.name in state.steer);
      return el("td", { class: `${layer.name} ${set ? "set" : "same"}`, dataset: { layer: layer.name } }, value);
    }))));
  if (!state.edited.a) copyProfile("a");
  const clamped = Object.keys(r.clamped);
  $("resolved-labels").textContent = r.labels + (clamped.length ? `   (clamped: ${clamped.join(", ")})` : "");
}

// -- chat -------------------------------------------------------------------------------------------------------
function steeringKey() {
  return JSON.stringify([state.mood, Object.entries(state.steer).sort()]);
}

async function ensureChatSession() {
  const c = state.character;
  if (!state.chat.sessionId) {
    const s = await api("POST", "/sessions", { character_id: c.id, mood: state.mood, attributes: state.steer, player_name: "Designer" });
    state.chat.sessionId = s.session_id;
    state.chat.synced = steeringKey();
    $("chat-session").textContent = `session ${s.session_id.slice(0, 8)}…`;
  } else if (state.chat.synced !== steeringKey()) {
    await api("POST", `/sessions/${state.chat.sessionId}/steer`, { clear: true, mood: state.mood, attributes: state.steer });
    state.chat.synced = steeringKey();
  }
  return state.chat.sessionId;
}

function usageText(done, deltas, clientMs) {
  const u = done.usage || {};
  const names = state.character ? state.character.schema.map((a) => a.name) : Object.keys(done.attributes); // schema order
  const vector = names.filter((k) => k in done.attributes).map((k) => `${k}:${done.attributes[k]}`).join(",");
  return [
    el("span", { class: "applied" }, `applied ${vector}`),
    ` · ${u.completion_tokens} tokens in ${deltas} pieces · TTFT ${Math.round(u.time_to_first_token_ms)} ms · total ${Math.round(u.total_ms)} ms`
      + ` (${Math.round(clientMs)} ms here) · ${String(done.finish_reason).replace("FINISH_REASON_", "").toLowerCase()}`,
  ];
}

async function sendChat(event) {
  event.preventDefault();
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text || !state.character) return;
  showError("chat-error", null);
  const log = $("chat-log");
  const c = state.character;
  log.append(el("div", { class: "msg player" }, el("div", { class: "who" }, "you"), el("div", { class: "text" }, text)));
  const reply = el("div", { class: "text" });
  const meta = el("div", { class: "meta" });
  const msg = el("div", { class: "msg npc streaming" }, el("div", { class: "who" }, c.name), reply, meta);
  log.append(msg);
  log.scrollTop = log.scrollHeight;
  input.value = "";
  $("chat-send").disabled = true;
  $("chat-cancel").hidden = false;
  const started = performance.now();
  let deltas = 0;
  try {
    const sessionId = await ensureChatSession();
    const interaction = state.chat.interaction = newId();
    msg.dataset.interaction = interaction;
    await streamSay(sessionId, { text, interaction_id: interaction }, (kind, data) => {
      if (kind === "delta") {
        deltas += 1;
        reply.textContent += data.text;
        msg.dataset.deltas = deltas;
        log.scrollTop = log.scrollHeight;
      } else if (kind === "done") {
        reply.textContent = data.text;
        meta.replaceChildren(...usageText(data, deltas, performance.now() - started));
        msg.dataset.done = "1";
      } else if (kind === "error") {
        throw new Error(data.message);
      }
    });
  } catch (error) {
    showError("chat-error", error);
    msg.classList.add("failed");
  } finally {
    msg.classList.remove("streaming");
    state.chat.interaction = null;
    $("chat-send").disabled = !state.ready;
    $("chat-cancel").hidden = true;
  }
}

async function cancelChat() {
  if (state.chat.interaction) await api("POST", `/interactions/${state.chat.interaction}/cancel`).catch(() => {});
}

// -- compare ----------------------------------------------------------------------------------------------------
function copyProfile(which) {
  const base = state.resolved ? state.resolved.layers[state.resolved.layers.length - 2].vector : {};
  state.profiles[which] = { ...base };
  state.edited[which] = false;
  renderProfile(which);
}

function renderProfile(which) {
  const c = state.character;
  const box = document.querySelector(`[data-profile=${which}]`);
  box.replaceChildren(...c.schema.flatMap((spec) => {
    const input = el("input", { type: "number", min: spec.min, max: spec.max, value: state.profiles[which][spec.name], dataset: { name: spec.name } });
    input.addEventListener("input", () => { state.profiles[which][spec.name] = Number(input.value); state.edited[which] = true; });
    return [el("label", { for: "" }, spec.name), input];
  }));
}

async function runCompare(event) {
  event.preventDefault();
  const text = $("compare-input").value.trim();
  const c = state.character;
  if (!text || !c) return;
  showError("compare-error", null);
  $("compare-run").disabled = true;
  const seed = Number($("compare-seed").value) || 7;
  const one = async (which) => {
    const column = $(`compare-${which}`);
    const reply = column.querySelector(".reply");
    const meta = column.querySelector(".meta");
    reply.textContent = "";
    meta.replaceChildren();
    reply.classList.add("streaming");
    column.dataset.deltas = "0";
    delete column.dataset.done;
    const started = performance.now();
    let deltas = 0;
    const session = await api("POST", "/sessions", { character_id: c.id, mood: state.mood, attributes: state.profiles[which] });
    try {
      await streamSay(session.session_id, { text, options: { seed } }, (kind, data) => {
        if (kind === "delta") { deltas += 1; reply.textContent += data.text; column.dataset.deltas = deltas; }
        else if (kind === "done") { reply.textContent = data.text; meta.replaceChildren(...usageText(data, deltas, performance.now() - started)); column.dataset.done = "1"; }
        else if (kind === "error") throw new Error(data.message);
      });
    } finally {
      reply.classList.remove("streaming");
      api("DELETE", `/sessions/${session.session_id}`).catch(() => {});
    }
  };
  try {
    await Promise.all([one("a"), one("b")]);
  } catch (error) {
    showError("compare-error", error);
  } finally {
    $("compare-run").disabled = !state.ready;
  }
}

// -- the persona editor -----------------------------------------------------------------------------------------
async function loadEditorFiles() {
  const data = await api("GET", "/personas");
  const select = $("editor-file");
  select.replaceChildren(...data.files.map((f) => el("option", { value: f.path }, f.character_id ? `${f.path} (${f.character_id})` : `${f.path} (not serving)`)));
  $("editor-save").disabled = !data.edit;
  $("editor-save").title = data.edit ? "" : "editing is off: start the studio with --allow-edit";
  if (state.editor.path) select.value = state.editor.path;
}

async function openEditorFile(path) {
  if (!path) return;
  await loadEditorFiles();
  const data = await api("GET", `/personas/file?path=${encodeURIComponent(path)}`);
  state.editor.path = path;
  state.editor.saved = data.text;
  $("editor-file").value = path;
  $("editor-text").value = data.text;
  setEditorStatus("", "");
  renderGutter([]);
}

function setEditorStatus(text, kind) {
  const node = $("editor-status");
  node.textContent = text;
  node.className = "small " + (kind || "");
}

function renderGutter(problems) {
  const text = $("editor-text");
  const lines = text.value.split("\n").length;
  const bad = new Map();
  for (const p of problems) if (!bad.has(p.line)) bad.set(p.line, p);
  $("editor-gutter").replaceChildren(...Array.from({ length: lines }, (_, i) => {
    const p = bad.get(i + 1);
    return el("div", { class: p ? "error" : "", title: p ? p.text : "", dataset: { line: i + 1 } }, i + 1);
  }));
  // An inline message at each problem's line, kept in place as the text scrolls.
  const lineH = parseFloat(getComputedStyle(document.documentElement).getPropertyValue("--line-h")) || 20;
  $("editor-inline").replaceChildren(...[...bad.values()].map((p) => el("div", {
    class: "inline-error", dataset: { line: p.line }, title: p.text, style: `top:${6 + (p.line - 1) * lineH - text.scrollTop + 1}px`,
  }, `line ${p.line}: ${p.message}`)));
  $("editor-gutter").scrollTop = text.scrollTop;
  $("editor-problems").replaceChildren(...problems.map((p) => el("li", { dataset: { line: p.line }, onclick: () => goToLine(p.line) }, p.text)));
}

function goToLine(line) {
  const text = $("editor-text");
  const lines = text.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  text.focus();
  text.setSelectionRange(start, start + (lines[line - 1] || "").length);
}

async function validateEditor() {
  const body = { path: state.editor.path, text: $("editor-text").value };
  try {
    const result = await api("POST", "/personas/validate", body);
    renderGutter(result.problems);
    if (result.ok) setEditorStatus(body.text === state.editor.saved ? "" : "valid (not saved yet)", "ok");
    else setEditorStatus(`${result.problems.length} problem(s)`, "bad");
  } catch (error) {
    setEditorStatus(error.message, "bad");
  }
}

async function saveEditor() {
  const body = { path: state.editor.path, text: $("editor-text").value };
  try {
    const result = await api("PUT", "/personas/file", body);
    state.editor.saved = body.text;
    renderGutter([]);
    setEditorStatus(result.reloaded ? `saved; hot reload: character ${result.character_id} is serving the new version` : "saved", "ok");
    await loadCharacters(true);
  } catch (error) {
    if (error.body && error.body.error && error.body.error.problems) {
      renderGutter(error.body.error.problems);
      setEditorStatus(`refused, not saved: ${error.body.error.problems.length} problem(s); the last good version keeps serving`, "bad");
    } else {
      setEditorStatus(error.message, "bad");
    }
  }
}

// -- steerability -----------------------------------------------------------------------------------------------
async function loadSteerability() {
  const box = $("steerability");
  let data;
  try {
    data = await api("GET", "/steerability");
  } catch (error) {
    box.replaceChildren(el("p", { class: "problems" }, error.message));
    return;
  }
  if (!data.available) {
    box.replaceChildren(el("p", { class: "muted", id: "steerability-none" }, "No steerability report for the served model. ", el("code", {}, data.hint)));
    return;
  }
  const rho = (s) => (s ? `${s.spearman >= 0 ? "+" : ""}${s.spearman.toFixed(2)}${s.constant ? " (constant)" : ""}` : "–");
  const means = (s) => (s ? Object.entries(s.per_target).map(([t, v]) => `${t}: ${v.mean.toFixed(2)}`).join(", ") : "");
  box.replaceChildren(
    el("p", { class: "small" }, `Model ${data.model}${data.adapter ? ` + adapter ${data.adapter}` : ""}, format ${data.format}, ${data.generations} generations (${data.decoding}).`),
    el("table", { class: "steer-table", id: "steerability-table" },
      el("tr", {}, ["attribute", "rho (APM)", "rho (independent)", "mean measured per target", "hit token limit"].map((h) => el("th", {}, h))),
      Object.entries(data.attributes).map(([name, e]) => el("tr", {},
        el("td", {}, name), el("td", {}, rho(e.apm)), el("td", {}, rho(e.words || e.sentiment) + (e.words ? " (words)" : e.sentiment ? " (VADER)" : "")),
        el("td", {}, means(e.apm || e.words)), el("td", {}, `${Math.round(100 * e.hit_token_limit)}%`)))),
    el("div", { class: "plots" }, data.plots.map((name) => el("figure", {},
      el("img", { src: `${API}/steerability/plots/${encodeURIComponent(name)}`, alt: `steerability of ${name}` }), el("figcaption", {}, name)))),
    el("p", { class: "muted small" }, `From ${data.folder}`),
  );
}

// -- wiring ---------------------------------------------------------------------------------------------------
function showTab(name) {
  for (const button of document.querySelectorAll(".tabs button")) button.classList.toggle("active", button.dataset.tab === name);
  for (const tab of document.querySelectorAll(".tab")) tab.hidden = tab.id !== `tab-${name}`;
  if (name === "steerability") loadSteerability();
}

function wire() {
  for (const button of document.querySelectorAll(".tabs button")) button.addEventListener("click", () => showTab(button.dataset.tab));
  $("mood-select").addEventListener("change", (e) => { state.mood = e.target.value; resolve(); });
  $("reset-steer").addEventListener("click", () => { state.steer = {}; resolve(); });
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-cancel").addEventListener("click", cancelChat);
  $("chat-new").addEventListener("click", () => {
    if (state.chat.sessionId) api("DELETE", `/sessions/${state.chat.sessionId}`).catch(() => {});
    state.chat = { sessionId: null, synced: null, interaction: null };
    $("chat-log").replaceChildren();
    $("chat-session").textContent = "no session yet";
  });
  $("compare-form").addEventListener("submit", runCompare);
  for (const button of document.querySelectorAll("[data-copy]")) button.addEventListener("click", () => copyProfile(button.dataset.copy));
  $("editor-file").addEventListener("change", (e) => openEditorFile(e.target.value));
  $("editor-reload").addEventListener("click", () => openEditorFile(state.editor.path));
  $("editor-save").addEventListener("click", saveEditor);
  const text = $("editor-text");
  text.addEventListener("input", () => { renderGutter([]); clearTimeout(state.editor.timer); state.editor.timer = setTimeout(validateEditor, 350); });
  text.addEventListener("scroll", () => {
    $("editor-gutter").scrollTop = text.scrollTop;
    const lineH = parseFloat(getComputedStyle(document.documentElement).getPropertyValue("--line-h")) || 20;
    for (const node of $("editor-inline").children) node.style.top = `${6 + (Number(node.dataset.line) - 1) * lineH - text.scrollTop + 1}px`;
  });
  text.addEventListener("keydown", (e) => {
    if (e.key === "Tab") { e.preventDefault(); text.setRangeText("  ", text.selectionStart, text.selectionEnd, "end"); }
    if ((e.ctrlKey || e.metaKey) && e.key === "s") { e.preventDefault(); saveEditor(); }
  });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.key = $("api-key").value.trim();
    sessionStorage.setItem("steernpc-key", state.key);
    $("key-form").hidden = true;
    start();
  });
}

async function start() {
  pollStatus();
  try {
    await loadCharacters(false);
  } catch (error) {
    if (error.status !== 401) $("character-head").replaceChildren(el("p", { class: "problems" }, error.message));
  }
}

document.addEventListener("DOMContentLoaded", () => { wire(); start(); });
