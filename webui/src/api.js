// The server's own OpenAI routes, with the API key (asked once on a 401, kept in localStorage).
const KEY_STORAGE = "llamabind.apiKey";

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function getKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

function headers(extra) {
  const h = { ...extra };
  const key = getKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorOf(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    const err = body && (body.error || body);
    if (err && typeof err.message === "string") message = err.message;
  } catch {
    // not JSON: keep the status line
  }
  return new HttpError(resp.status, message);
}

/**
 * fetch + JSON with the key. On a 401 `askKey()` is awaited (it returns the new key or null) and
 * the request retried once with it.
 */
export async function getJson(path, askKey) {
  for (let attempt = 0; ; attempt++) {
    const resp = await fetch(path, { headers: headers() });
    if (resp.ok) return resp.json();
    const err = await errorOf(resp);
    if (resp.status === 401 && askKey && attempt < 3) {
      const key = await askKey(err.message);
      if (key == null) throw err;
      setKey(key);
      continue;
    }
    throw err;
  }
}

/** Parse an SSE byte stream into the JSON payloads of its `data:` lines (stops at [DONE]). */
export async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = event
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * Stream a chat completion. `onDelta(choiceDelta)` gets each delta, `onUsage(usage)` the final
 * usage. Resolves with the finish reason; rejects with HttpError (status 401 included) or an
 * AbortError when `signal` aborts.
 */
export async function streamChat(request, { signal, onDelta, onUsage }) {
  const resp = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...request, stream: true, stream_options: { include_usage: true } }),
    signal,
  });
  if (!resp.ok) throw await errorOf(resp);
  let finish = null;
  for await (const chunk of sseEvents(resp.body)) {
    if (chunk.error) throw new HttpError(500, chunk.error.message || "the server reported an error");
    if (chunk.usage) onUsage(chunk.usage);
    for (const choice of chunk.choices || []) {
      if (choice.delta) onDelta(choice.delta);
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  return finish;
}
