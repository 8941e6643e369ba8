// Build the chat UI into the Python package: src/ → ../src/llamabind/server/webui_dist/
// (index.html, app.js, app.css, favicon.svg) plus SOURCES.sha256, the hash of the sources that
// tests/server/test_webui_bundle.py recomputes to catch a bundle older than its sources.
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "src", "llamabind", "server", "webui_dist");

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

/** sha256 over "<relative path>\0<sha256 of the file>\n" for every source, sorted by path. */
function sourceHash() {
  const files = ["package.json", "package-lock.json", "build.mjs"].map((f) => join(here, f)).concat(walk(join(here, "src")));
  const rel = files.map((f) => relative(here, f).split(sep).join("/")).sort();
  const h = createHash("sha256");
  for (const name of rel) {
    const digest = createHash("sha256").update(readFileSync(join(here, name))).digest("hex");
    h.update(`${name}\0${digest}\n`);
  }
  return h.digest("hex");
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await esbuild.build({
  entryPoints: { app: join(here, "src", "main.js") },
  outdir: out,
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  legalComments: "eof",
  logLevel: "warning",
});
copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));
copyFileSync(join(here, "src", "favicon.svg"), join(out, "favicon.svg"));
writeFileSync(join(out, "SOURCES.sha256"), `${sourceHash()}\n`);
for (const name of readdirSync(out).sort()) console.log(`${name.padEnd(16)} ${statSync(join(out, name)).size} bytes`);
