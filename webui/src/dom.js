// A tiny element builder (text always goes in as text nodes) and the in-page modal and toast.

/** h("button", {class: "x", onclick: fn, "aria-label": "y"}, "text", child) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

let modalResolve = null;

/**
 * Ask in the page (never window.prompt/confirm). kind "text" | "password" shows an input and
 * resolves with its value; "confirm" resolves with true. Cancel resolves with null.
 */
export function ask(message, { kind = "text", value = "", ok = "OK" } = {}) {
  const modal = document.getElementById("modal");
  const input = document.getElementById("modal-input");
  if (modalResolve) modalResolve(null);
  document.getElementById("modal-text").textContent = message;
  document.getElementById("modal-ok").textContent = ok;
  input.hidden = kind === "confirm";
  input.type = kind === "password" ? "password" : "text";
  input.value = value;
  modal.hidden = false;
  (kind === "confirm" ? document.getElementById("modal-ok") : input).focus();
  input.select();
  return new Promise((resolve) => {
    modalResolve = (result) => {
      modalResolve = null;
      modal.hidden = true;
      resolve(result);
    };
  });
}

export function initModal() {
  const form = document.getElementById("modal-form");
  const input = document.getElementById("modal-input");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (modalResolve) modalResolve(input.hidden ? true : input.value);
  });
  document.getElementById("modal-cancel").addEventListener("click", () => modalResolve && modalResolve(null));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && modalResolve) modalResolve(null);
  });
}

let toastTimer = null;

export function toast(message, ms = 4000) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), ms);
}

export function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
