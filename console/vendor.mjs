// Copies the pinned pdf.js build into the Python package (src/contrackt/api/console/vendor/pdfjs).
// Run after `npm ci`: the copied files are committed, so nothing is built when the service runs.
// Only what the console loads is copied: the library, its worker, the standard fonts (PDFs that
// name Helvetica & co. without embedding them) and the image decoders (JPEG 2000, JBIG2, ICC).
// Not copied: the scripting sandbox (a document's JavaScript is never run), the viewer, CMaps.
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "node_modules", "pdfjs-dist");
const out = join(here, "..", "src", "contrackt", "api", "console", "vendor", "pdfjs");

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "wasm"), { recursive: true });
for (const name of ["LICENSE", "package.json"]) cpSync(join(src, name), join(out, name));
for (const name of ["pdf.min.mjs", "pdf.worker.min.mjs"]) cpSync(join(src, "build", name), join(out, name));
cpSync(join(src, "standard_fonts"), join(out, "standard_fonts"), { recursive: true });
for (const name of [
  "openjpeg.wasm", "LICENSE_OPENJPEG", "LICENSE_PDFJS_OPENJPEG",
  "jbig2.wasm", "LICENSE_JBIG2", "LICENSE_PDFJS_JBIG2",
  "qcms_bg.wasm", "LICENSE_QCMS", "LICENSE_PDFJS_QCMS",
]) cpSync(join(src, "wasm", name), join(out, "wasm", name));
console.log(`pdf.js copied to ${out}`);
