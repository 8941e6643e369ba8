// One message's DOM: content (Markdown for replies, plain text for the user), reasoning (collapsed),
// tool calls, statistics and the actions (copy, edit, regenerate).
import { h } from "./dom.js";
import { copyText, setMarkdown } from "./markdown.js";

function statsText(msg) {
  const s = msg.stats || {};
  const parts = [];
  if (s.completion_tokens != null) parts.push(`${s.completion_tokens} tokens`);
  if (s.tps != null && Number.isFinite(s.tps)) parts.push(`${s.tps.toFixed(1)} tokens/s`);
  if (s.prompt_ms != null) parts.push(`first token ${Math.round(s.prompt_ms)} ms`);
  if (s.prompt_tokens != null && s.completion_tokens != null) {
    const used = s.prompt_tokens + s.completion_tokens;
    parts.push(s.n_ctx ? `context ${used}/${s.n_ctx} (${Math.round((100 * used) / s.n_ctx)}%)` : `context ${used}`);
  }
  if (msg.stopped) parts.push("stopped");
  else if (msg.finish === "length") parts.push("cut at max tokens");
  return parts.join(" · ");
}

function toolCallsView(calls) {
  return h(
    "div",
    { class: "tool-calls" },
    calls.map((call) =>
      h(
        "details",
        { class: "tool-call" },
        h("summary", {}, "Tool call: ", h("code", {}, (call.function && call.function.name) || "?")),
        h("pre", {}, (call.function && call.function.arguments) || ""),
      ),
    ),
  );
}

/**
 * Build the view of `msg` (index `i`); `actions` = {onEdit(i), onRegenerate(i)}; `streaming`
 * marks the reply being generated. Returns {el, update()} where update() re-renders the parts that
 * streaming changes.
 */
export function messageView(msg, i, { isLast, streaming, actions }) {
  const content = h("div", { class: "content" });
  const reasoningText = h("div", { class: "reasoning-text" });
  const reasoning = h("details", { class: "reasoning", hidden: true }, h("summary", {}, "Reasoning"), reasoningText);
  const tools = h("div", { class: "tools" });
  const error = h("div", { class: "error", hidden: true });
  const meta = h("div", { class: "meta" });
  const images = (msg.images || []).map((src) => h("img", { class: "attachment", src, alt: "attached image" }));
  const bubble = h("div", { class: "bubble" }, images.length ? h("div", { class: "images" }, images) : null, reasoning, content, tools, error);
  const el = h("div", { class: `msg ${msg.role}`, "data-index": String(i) }, bubble, meta);
  let renderedContent = null;

  function update() {
    if (msg.role === "assistant") {
      if (msg.content !== renderedContent) {
        setMarkdown(content, msg.content);
        renderedContent = msg.content;
      }
      reasoning.hidden = !msg.reasoning;
      if (reasoningText.textContent !== (msg.reasoning || "")) reasoningText.textContent = msg.reasoning || "";
      tools.replaceChildren(msg.tool_calls && msg.tool_calls.length ? toolCallsView(msg.tool_calls) : "");
    } else {
      content.textContent = msg.content;
    }
    error.hidden = !msg.error;
    error.textContent = msg.error || "";
    el.classList.toggle("streaming", Boolean(streaming));
  }

  function buttons() {
    const list = [h("button", { type: "button", class: "act copy", onclick: (e) => copyText(msg.content, e.currentTarget) }, "Copy")];
    if (msg.role === "user") list.push(h("button", { type: "button", class: "act edit", onclick: () => actions.onEdit(i) }, "Edit"));
    if (msg.role === "assistant" && isLast) {
      list.push(h("button", { type: "button", class: "act regenerate", onclick: () => actions.onRegenerate(i) }, "Regenerate"));
    }
    return list;
  }

  function finish() {
    streaming = false;
    update();
    meta.replaceChildren(h("span", { class: "stats" }, msg.role === "assistant" ? statsText(msg) : ""), h("span", { class: "actions" }, buttons()));
  }

  if (streaming) update();
  else finish();
  return { el, update, finish };
}

/** An inline editor for a user message: resolves with the new text, or null when cancelled. */
export function editView(msg, onDone) {
  const area = h("textarea", { class: "edit-area", rows: 3 });
  area.value = msg.content;
  const done = (value) => onDone(value);
  area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      done(area.value);
    }
  });
  const el = h(
    "div",
    { class: "msg user editing" },
    h("div", { class: "bubble" }, area),
    h(
      "div",
      { class: "meta" },
      h("span", { class: "actions" },
        h("button", { type: "button", class: "act cancel-edit", onclick: () => done(null) }, "Cancel"),
        h("button", { type: "button", class: "act send-edit primary", onclick: () => done(area.value) }, "Send"),
      ),
    ),
  );
  setTimeout(() => area.focus(), 0);
  return el;
}
