// Conversations, kept in localStorage: an index (ids, titles, times) plus one entry per conversation.
const INDEX = "llamabind.conversations";
const PREFIX = "llamabind.conversation.";

export const DEFAULT_SETTINGS = { system: "", temperature: 0.7, top_p: 0.95, max_tokens: 1024 };

export function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function readJson(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw ? JSON.parse(raw) : fallback;
  } catch {
    return fallback;
  }
}

/** The index, newest first: [{id, title, updated}]. */
export function listConversations() {
  const list = readJson(INDEX, []);
  return Array.isArray(list) ? list.filter((c) => c && typeof c.id === "string") : [];
}

export function loadConversation(id) {
  const conv = readJson(PREFIX + id, null);
  if (!conv || !Array.isArray(conv.messages)) return null;
  conv.settings = { ...DEFAULT_SETTINGS, ...(conv.settings || {}) };
  return conv;
}

export function createConversation(model, settings) {
  const now = Date.now();
  return {
    id: newId(),
    title: "New chat",
    created: now,
    updated: now,
    model: model || "",
    settings: { ...DEFAULT_SETTINGS, ...(settings || {}) },
    messages: [],
  };
}

/** Persist; throws a readable Error when the browser's storage is full. */
export function saveConversation(conv) {
  conv.updated = Date.now();
  try {
    localStorage.setItem(PREFIX + conv.id, JSON.stringify(conv));
    const list = listConversations().filter((c) => c.id !== conv.id);
    list.unshift({ id: conv.id, title: conv.title, updated: conv.updated });
    localStorage.setItem(INDEX, JSON.stringify(list));
  } catch (e) {
    if (e && e.name === "QuotaExceededError") {
      throw new Error("browser storage is full: delete or export some conversations");
    }
    throw e;
  }
}

export function deleteConversation(id) {
  localStorage.removeItem(PREFIX + id);
  localStorage.setItem(INDEX, JSON.stringify(listConversations().filter((c) => c.id !== id)));
}

export function exportJson(conv) {
  return JSON.stringify(conv, null, 2);
}
