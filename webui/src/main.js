// The chat app: conversations in the sidebar, the selected one in the middle, the composer below.
import "./app.css";
import * as api from "./api.js";
import { ask, download, h, initModal, toast } from "./dom.js";
import * as store from "./store.js";
import { editView, messageView } from "./view.js";

const $ = (id) => document.getElementById(id);

const state = {
  models: [], // [{id, meta}] from /v1/models
  vision: false, // the server has a projector that takes images
  conv: null,
  busy: null, // {conv, msg, controller, view}
  images: [], // data URLs waiting in the composer
  editing: -1,
};

// ------------------------------------------------------------------ server info and the API key
function askKey(reason) {
  return ask(`This server needs an API key (${reason}).`, { kind: "password", ok: "Save key" }).then((key) =>
    key ? key.trim() : null,
  );
}

async function loadServerInfo() {
  for (;;) {
    try {
      const models = await api.getJson("/v1/models", askKey);
      state.models = models.data || [];
      const props = await api.getJson("/webui/props", askKey);
      state.vision = (props.modalities || []).includes("image");
      break;
    } catch (e) {
      if (e.status === 503) {
        $("status").textContent = "Loading the model…";
        await new Promise((r) => setTimeout(r, 1500));
        continue;
      }
      $("status").textContent = `Server unavailable: ${e.message}`;
      return;
    }
  }
  $("status").textContent = "";
  $("attach").hidden = !state.vision;
  renderModels();
}

function nCtx(modelId) {
  const m = state.models.find((x) => x.id === modelId) || state.models[0];
  return m && m.meta ? m.meta.n_ctx_slot : null;
}

function renderModels() {
  const select = $("model");
  const ids = state.models.map((m) => m.id);
  const current = state.conv && state.conv.model;
  if (current && !ids.includes(current)) ids.push(current);
  select.replaceChildren(...ids.map((id) => h("option", { value: id }, id)));
  if (state.conv && !state.conv.model && ids.length) state.conv.model = ids[0];
  select.value = (state.conv && state.conv.model) || ids[0] || "";
}

// ------------------------------------------------------------------ conversations
function save(conv) {
  if (conv.deleted) return;
  try {
    store.saveConversation(conv);
  } catch (e) {
    toast(e.message, 8000);
  }
}

function renderList() {
  const list = $("conv-list");
  list.replaceChildren(
    ...store.listConversations().map((c) =>
      h(
        "li",
        { class: state.conv && c.id === state.conv.id ? "active" : "" },
        h("button", { type: "button", class: "conv-title", title: c.title, onclick: () => openConversation(c.id) }, c.title),
        h("button", { type: "button", class: "icon rename", title: "Rename", "aria-label": "Rename", onclick: () => renameConversation(c.id) }, "✎"),
        h("button", { type: "button", class: "icon export", title: "Export as JSON", "aria-label": "Export", onclick: () => exportConversation(c.id) }, "⤓"),
        h("button", { type: "button", class: "icon delete", title: "Delete", "aria-label": "Delete", onclick: () => removeConversation(c.id) }, "✕"),
      ),
    ),
  );
}

function getConversation(id) {
  if (state.busy && state.busy.conv.id === id) return state.busy.conv;
  if (state.conv && state.conv.id === id) return state.conv;
  return store.loadConversation(id);
}

function openConversation(id) {
  const conv = getConversation(id);
  if (!conv) return toast("That conversation could not be read");
  state.conv = conv;
  state.editing = -1;
  localStorage.setItem("llamabind.current", id);
  document.body.classList.remove("sidebar-open");
  renderAll();
}

function newConversation() {
  state.conv = store.createConversation(state.models[0] && state.models[0].id);
  state.editing = -1;
  localStorage.removeItem("llamabind.current");
  document.body.classList.remove("sidebar-open");
  renderAll();
  $("input").focus();
}

async function renameConversation(id) {
  const conv = getConversation(id);
  if (!conv) return;
  const title = await ask("New name for this conversation:", { value: conv.title, ok: "Rename" });
  if (title == null || !title.trim()) return;
  conv.title = title.trim().slice(0, 200);
  save(conv);
  renderAll();
}

function exportConversation(id) {
  const conv = getConversation(id);
  if (conv) download(`${conv.title.replace(/[^\w.-]+/g, "_").slice(0, 60) || "conversation"}.json`, store.exportJson(conv));
}

async function removeConversation(id) {
  const conv = getConversation(id);
  if (!conv || !(await ask(`Delete “${conv.title}”?`, { kind: "confirm", ok: "Delete" }))) return;
  conv.deleted = true; // a reply still streaming into it must not save it again
  if (state.busy && state.busy.conv.id === id) state.busy.controller.abort();
  store.deleteConversation(id);
  if (state.conv && state.conv.id === id) newConversation();
  else renderList();
}

// ------------------------------------------------------------------ rendering
function renderSettings() {
  const s = state.conv.settings;
  $("system").value = s.system;
  $("temperature").value = s.temperature;
  $("top_p").value = s.top_p;
  $("max_tokens").value = s.max_tokens ?? "";
}

function renderMessages() {
  const box = $("messages");
  const conv = state.conv;
  const msgs = conv.messages;
  const views = msgs.map((msg, i) => {
    if (i === state.editing) return editView(msg, (text) => finishEdit(i, text));
    const streaming = state.busy && state.busy.msg === msg;
    const view = messageView(msg, i, {
      isLast: i === msgs.length - 1 && !state.busy,
      streaming,
      actions: { onEdit: startEdit, onRegenerate: regenerate },
    });
    if (streaming) state.busy.view = view;
    return view.el;
  });
  box.replaceChildren(...views);
  $("empty").hidden = msgs.length > 0;
  box.scrollTop = box.scrollHeight;
}

function renderComposer() {
  const busyHere = Boolean(state.busy);
  $("send").hidden = busyHere;
  $("stop").hidden = !busyHere;
  $("attachments").replaceChildren(
    ...state.images.map((src, i) =>
      h("span", { class: "thumb" }, h("img", { src, alt: "attachment" }), h("button", { type: "button", class: "icon", "aria-label": "Remove", onclick: () => { state.images.splice(i, 1); renderComposer(); } }, "✕")),
    ),
  );
}

function renderAll() {
  $("title").textContent = state.conv.title;
  renderList();
  renderModels();
  renderSettings();
  renderMessages();
  renderComposer();
}

// ------------------------------------------------------------------ generation
function requestFor(conv, upTo) {
  const s = conv.settings;
  const messages = [];
  if (s.system && s.system.trim()) messages.push({ role: "system", content: s.system });
  for (const m of conv.messages.slice(0, upTo)) {
    if (m.role === "user") {
      const parts = (m.images || []).map((url) => ({ type: "image_url", image_url: { url } }));
      messages.push({ role: "user", content: parts.length ? [{ type: "text", text: m.content }, ...parts] : m.content });
    } else if (m.content) {
      messages.push({ role: "assistant", content: m.content });
    }
  }
  const req = { model: conv.model || undefined, messages };
  const num = (v) => (v === "" || v == null || Number.isNaN(Number(v)) ? undefined : Number(v));
  req.temperature = num(s.temperature);
  req.top_p = num(s.top_p);
  const maxTokens = num(s.max_tokens);
  if (maxTokens && maxTokens > 0) req.max_tokens = Math.floor(maxTokens);
  return req;
}

function mergeToolCalls(into, deltas) {
  for (const d of deltas) {
    const idx = d.index ?? into.length;
    const call = into[idx] || (into[idx] = { id: d.id || "", type: "function", function: { name: "", arguments: "" } });
    if (d.id) call.id = d.id;
    if (d.function) {
      if (d.function.name) call.function.name += d.function.name;
      if (d.function.arguments) call.function.arguments += d.function.arguments;
    }
  }
}

async function generate() {
  const conv = state.conv;
  const msg = { id: store.newId(), role: "assistant", content: "", reasoning: "", tool_calls: [], model: conv.model };
  const request = requestFor(conv, conv.messages.length);
  conv.messages.push(msg);
  const busy = { conv, msg, controller: new AbortController(), view: null };
  state.busy = busy;
  save(conv);
  renderAll();
  const started = performance.now();
  let first = null;
  let usage = null;
  let painting = false;
  const paint = () => {
    painting = false;
    if (busy.view && state.conv === conv) {
      const box = $("messages");
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      busy.view.update();
      if (atBottom) box.scrollTop = box.scrollHeight;
    }
  };
  try {
    msg.finish = await api.streamChat(request, {
      signal: busy.controller.signal,
      onDelta(delta) {
        if (first == null) first = performance.now();
        if (delta.content) msg.content += delta.content;
        if (delta.reasoning_content) msg.reasoning += delta.reasoning_content;
        if (delta.tool_calls) mergeToolCalls(msg.tool_calls, delta.tool_calls);
        if (!painting) {
          painting = true;
          requestAnimationFrame(paint);
        }
      },
      onUsage(u) {
        usage = u;
      },
    });
  } catch (e) {
    if (e.name === "AbortError") msg.stopped = true;
    else if (e.status === 401 && !msg.content) {
      const key = await askKey(e.message);
      if (key) {
        api.setKey(key);
        conv.messages.splice(conv.messages.indexOf(msg), 1);
        state.busy = null;
        return generate();
      }
      msg.error = e.message;
    } else msg.error = e.message || String(e);
  }
  const ended = performance.now();
  const n = usage ? usage.completion_tokens : null;
  msg.stats = {
    completion_tokens: n,
    prompt_tokens: usage ? usage.prompt_tokens : null,
    prompt_ms: first != null ? first - started : null,
    tps: n != null && first != null && n > 1 && ended > first ? ((n - 1) * 1000) / (ended - first) : null,
    n_ctx: nCtx(conv.model),
  };
  state.busy = null;
  save(conv);
  if (state.conv === conv) renderAll();
  else renderList();
}

function send() {
  const input = $("input");
  const text = input.value.trim();
  if (state.busy || (!text && !state.images.length)) return;
  const conv = state.conv;
  conv.messages.push({ id: store.newId(), role: "user", content: text, images: state.images });
  if (conv.title === "New chat") conv.title = (text || "Image").replace(/\s+/g, " ").slice(0, 60);
  state.images = [];
  input.value = "";
  autosize();
  localStorage.setItem("llamabind.current", conv.id);
  generate();
}

function regenerate(i) {
  if (state.busy) return;
  state.conv.messages.splice(i);
  generate();
}

function startEdit(i) {
  if (state.busy) return;
  state.editing = i;
  renderMessages();
}

function finishEdit(i, text) {
  state.editing = -1;
  if (text == null || !text.trim()) return renderMessages();
  const old = state.conv.messages[i];
  state.conv.messages.splice(i);
  state.conv.messages.push({ ...old, id: store.newId(), content: text.trim() });
  generate();
}

// ------------------------------------------------------------------ composer, settings, theme
function autosize() {
  const input = $("input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
}

function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

const THEMES = ["auto", "dark", "light"];

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  $("theme").textContent = `Theme: ${theme}`;
}

function bind() {
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  $("input").addEventListener("input", autosize);
  $("stop").addEventListener("click", () => state.busy && state.busy.controller.abort());
  $("new-chat").addEventListener("click", newConversation);
  $("menu").addEventListener("click", () => document.body.classList.toggle("sidebar-open"));
  $("backdrop").addEventListener("click", () => document.body.classList.remove("sidebar-open"));
  $("settings-toggle").addEventListener("click", () => ($("settings").hidden = !$("settings").hidden));
  $("model").addEventListener("change", (e) => {
    state.conv.model = e.target.value;
    if (state.conv.messages.length) save(state.conv);
  });
  for (const name of ["system", "temperature", "top_p", "max_tokens"]) {
    $(name).addEventListener("change", (e) => {
      state.conv.settings[name] = name === "system" ? e.target.value : e.target.value === "" ? "" : Number(e.target.value);
      if (state.conv.messages.length) save(state.conv);
    });
  }
  $("attach").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", async (e) => {
    for (const file of e.target.files) {
      if (!file.type.startsWith("image/")) continue;
      try {
        state.images.push(await readImage(file));
      } catch {
        toast(`Could not read ${file.name}`);
      }
    }
    e.target.value = "";
    renderComposer();
  });
  $("theme").addEventListener("click", () => {
    const now = localStorage.getItem("llamabind.theme") || "auto";
    const next = THEMES[(THEMES.indexOf(now) + 1) % THEMES.length];
    localStorage.setItem("llamabind.theme", next);
    applyTheme(next);
  });
  $("forget-key").addEventListener("click", () => {
    api.setKey("");
    toast("API key forgotten");
  });
}

async function main() {
  initModal();
  bind();
  applyTheme(localStorage.getItem("llamabind.theme") || "auto");
  const current = localStorage.getItem("llamabind.current");
  state.conv = (current && store.loadConversation(current)) || store.createConversation("");
  renderAll();
  await loadServerInfo();
  if (!state.conv.model && state.models[0]) state.conv.model = state.models[0].id;
  renderModels();
  document.body.dataset.ready = "true";
}

main();
