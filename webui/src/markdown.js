// Model output → safe DOM. Three layers: raw HTML in the Markdown is shown as text (never parsed),
// the HTML marked produces goes through DOMPurify (no scripts, handlers, javascript: URLs, forms,
// styles, images), and the page's Content-Security-Policy forbids inline script and remote loads.
import { Marked } from "marked";
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import c from "highlight.js/lib/languages/c";
import cpp from "highlight.js/lib/languages/cpp";
import css from "highlight.js/lib/languages/css";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";

const LANGUAGES = { bash, c, cpp, css, javascript, json, python, rust, sql, typescript, xml, yaml };
for (const [name, lang] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, lang);

export function escapeHtml(text) {
  return String(text)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

const SAFE_URL = /^(https?:|mailto:|#)/i;

const marked = new Marked({
  gfm: true,
  breaks: false,
  renderer: {
    // Raw HTML (block or inline) is displayed, not interpreted.
    html({ text }) {
      return escapeHtml(text);
    },
    code({ text, lang }) {
      const name = (lang || "").trim().split(/\s+/)[0].toLowerCase();
      const known = name && hljs.getLanguage(name);
      const body = known
        ? hljs.highlight(text, { language: name, ignoreIllegals: true }).value
        : escapeHtml(text);
      const cls = known ? ` class="hljs language-${escapeHtml(name)}"` : ' class="hljs"';
      const label = name ? `<span class="code-lang">${escapeHtml(name)}</span>` : "";
      return `<div class="code-block">${label}<pre><code${cls}>${body}</code></pre></div>`;
    },
    // No remote images from model output (they would leak the conversation to any host): a link.
    image({ href, text }) {
      const label = escapeHtml(text || href || "image");
      return SAFE_URL.test(href || "") ? `<a href="${escapeHtml(href)}">[${label}]</a>` : `[${label}]`;
    },
    link({ href, tokens }) {
      const inner = this.parser.parseInline(tokens);
      return SAFE_URL.test(href || "") ? `<a href="${escapeHtml(href)}">${inner}</a>` : inner;
    },
  },
});

const PURIFY = {
  FORBID_TAGS: ["style", "img", "svg", "math", "form", "input", "button", "textarea", "select", "iframe", "video", "audio"],
  FORBID_ATTR: ["style", "srcset"],
  ALLOW_DATA_ATTR: false,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    if (!SAFE_URL.test(href)) node.removeAttribute("href");
    else if (!href.startsWith("#")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  }
});

/** Sanitized HTML for a Markdown string. */
export function renderMarkdown(text) {
  return DOMPurify.sanitize(marked.parse(text || ""), PURIFY);
}

/** Fill `el` with rendered Markdown and give every code block a copy button. */
export function setMarkdown(el, text) {
  el.innerHTML = renderMarkdown(text);
  for (const block of el.querySelectorAll(".code-block")) {
    const code = block.querySelector("code");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "copy-code";
    btn.textContent = "Copy";
    btn.addEventListener("click", () => copyText(code ? code.textContent : "", btn));
    block.prepend(btn);
  }
}

export async function copyText(text, btn) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    // Clipboard API unavailable (plain http on a non-local host): the old way.
    const ta = document.createElement("textarea");
    ta.value = text;
    ta.setAttribute("readonly", "");
    ta.className = "offscreen";
    document.body.append(ta);
    ta.select();
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    ta.remove();
  }
  if (btn) {
    const old = btn.textContent;
    btn.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => (btn.textContent = old), 1200);
  }
}
