// Draws the pages of the LOCAL file (the server never sends the document back) and overlays the
// result's line boxes. Boxes are PDF points with the origin at the top left of the page as
// displayed, for text-layer and OCR pages alike; so every overlay is an SVG whose viewBox is the
// page's size in points, laid over the canvas: the browser does the scaling.
import * as pdfjs from "./vendor/pdfjs/pdf.min.mjs";

pdfjs.GlobalWorkerOptions.workerSrc = "/console/vendor/pdfjs/pdf.worker.min.mjs";

const SVG = "http://www.w3.org/2000/svg";
const MAX_PAGES = 100;  // a preview, not a viewer: longer documents show their first pages
const TARGET_WIDTH = 820;
const DEFAULT_DPI = 96;  // what the service assumes for an image without a usable resolution
const MIN_DPI = 20;
const MAX_DPI = 4800;

function figure(container, number, widthPt, heightPt) {
  const fig = document.createElement("figure");
  fig.className = "page";
  fig.dataset.page = String(number);
  const canvas = document.createElement("canvas");
  const overlay = document.createElementNS(SVG, "svg");
  overlay.setAttribute("class", "overlay");
  overlay.setAttribute("viewBox", `0 0 ${widthPt} ${heightPt}`);
  overlay.setAttribute("preserveAspectRatio", "none");
  const caption = document.createElement("figcaption");
  caption.textContent = `page ${number}`;
  fig.append(canvas, overlay, caption);
  container.append(fig);
  return { fig, canvas };
}

async function renderPdf(container, bytes) {
  const task = pdfjs.getDocument({
    data: bytes,
    standardFontDataUrl: "/console/vendor/pdfjs/standard_fonts/",
    wasmUrl: "/console/vendor/pdfjs/wasm/",
    enableXfa: false,
    isOffscreenCanvasSupported: true,
  });
  const doc = await task.promise;
  const count = Math.min(doc.numPages, MAX_PAGES);
  for (let n = 1; n <= count; n++) {
    const page = await doc.getPage(n);
    const base = page.getViewport({ scale: 1 });  // points, the page's /Rotate applied
    const { canvas } = figure(container, n, base.width, base.height);
    const scale = (TARGET_WIDTH * (window.devicePixelRatio || 1)) / base.width;
    const viewport = page.getViewport({ scale });
    canvas.width = Math.round(viewport.width);
    canvas.height = Math.round(viewport.height);
    await page.render({ canvas, canvasContext: canvas.getContext("2d"), viewport }).promise;
    page.cleanup();
  }
  await task.destroy();
  return count;
}

function pngDpi(view) {
  let at = 8;
  while (at + 8 <= view.byteLength) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...new Uint8Array(view.buffer, view.byteOffset + at + 4, 4));
    if (type === "pHYs" && length >= 9 && view.getUint8(at + 16) === 1) {
      return [view.getUint32(at + 8) * 0.0254, view.getUint32(at + 12) * 0.0254];
    }
    if (type === "IDAT" || type === "IEND") break;
    at += 12 + length;
  }
  return null;
}

function jpegDpi(view) {
  let at = 2;
  while (at + 4 <= view.byteLength && view.getUint8(at) === 0xff) {
    const marker = view.getUint8(at + 1);
    const length = view.getUint16(at + 2);
    if (marker === 0xe0 && length >= 16 && view.getUint32(at + 4) === 0x4a464946) {  // "JFIF"
      const units = view.getUint8(at + 11);
      const x = view.getUint16(at + 12);
      const y = view.getUint16(at + 14);
      if (units === 1) return [x, y];
      if (units === 2) return [x * 2.54, y * 2.54];
      return null;
    }
    if (marker === 0xda) break;  // start of scan
    at += 2 + length;
  }
  return null;
}

// The resolution the service reads (PNG pHYs, JPEG JFIF density), else 96 dpi.
export function imageDpi(buffer, type) {
  const view = new DataView(buffer);
  let dpi = null;
  try {
    dpi = type === "image/png" ? pngDpi(view) : jpegDpi(view);
  } catch {
    dpi = null;
  }
  const ok = dpi && dpi.every((v) => v >= MIN_DPI && v <= MAX_DPI);
  return ok ? dpi : [DEFAULT_DPI, DEFAULT_DPI];
}

async function renderImage(container, file, buffer) {
  // createImageBitmap applies the EXIF orientation, as the service does before reading the frame
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  // (a quarter-turned JPEG swaps its axes' densities on the service's side; JFIF densities are
  // almost always square, so the overlay does not swap them)
  const [xdpi, ydpi] = imageDpi(buffer, file.type);
  const { canvas } = figure(container, 1, (bitmap.width * 72) / xdpi, (bitmap.height * 72) / ydpi);
  const scale = Math.min(1, (TARGET_WIDTH * (window.devicePixelRatio || 1)) / bitmap.width);
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  return 1;
}

export function kindOf(file, head) {
  const b = new Uint8Array(head);
  const starts = (...sig) => sig.every((v, i) => b[i] === v);
  if (starts(0x25, 0x50, 0x44, 0x46)) return "pdf";
  if (starts(0x89, 0x50, 0x4e, 0x47)) return "png";
  if (starts(0xff, 0xd8, 0xff)) return "jpeg";
  if (starts(0x49, 0x49, 0x2a, 0x00) || starts(0x4d, 0x4d, 0x00, 0x2a)) return "tiff";
  return file.type || "unknown";
}

function notice(container, text) {
  const fig = document.createElement("figure");
  fig.className = "page";
  const p = document.createElement("p");
  p.className = "no-preview";
  p.textContent = text;
  fig.append(p);
  container.append(fig);
}

// Renders the local file's pages into container; resolves with the number of pages drawn.
export async function renderLocal(container, file) {
  container.replaceChildren();
  const buffer = await file.arrayBuffer();
  const kind = kindOf(file, buffer.slice(0, 8));
  if (kind === "pdf") return renderPdf(container, new Uint8Array(buffer));
  if (kind === "png" || kind === "jpeg") {
    const typed = file.type ? file : new File([buffer], "upload", { type: `image/${kind}` });
    return renderImage(container, typed, buffer);
  }
  notice(container, kind === "tiff"
    ? "Browsers cannot draw TIFF files: the text is above, the page preview is not available."
    : "No preview for this kind of file.");
  return 0;
}

function colour(confidence) {
  const c = Math.max(0, Math.min(1, (confidence - 0.5) / 0.5));
  return `hsl(${Math.round(120 * c)} 75% 42%)`;
}

// Draws the result's line boxes over the pages already rendered; returns the boxes drawn per page.
export function overlay(container, result) {
  const drawn = {};
  for (const page of result.pages || []) {
    const fig = container.querySelector(`figure.page[data-page="${page.number}"]`);
    if (!fig) continue;
    const svg = fig.querySelector("svg.overlay");
    svg.replaceChildren();
    for (const line of page.lines || []) {
      const [x0, y0, x1, y1] = line.bbox;
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("class", "box");
      rect.setAttribute("x", String(x0));
      rect.setAttribute("y", String(y0));
      rect.setAttribute("width", String(Math.max(0, x1 - x0)));
      rect.setAttribute("height", String(Math.max(0, y1 - y0)));
      rect.setAttribute("fill", colour(line.confidence));
      rect.setAttribute("stroke", colour(line.confidence));
      rect.dataset.confidence = String(line.confidence);
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${(line.confidence * 100).toFixed(1)}%  ${line.text}`;
      rect.append(title);
      svg.append(rect);
    }
    fig.dataset.source = page.source;
    fig.querySelector("figcaption").textContent =
      `page ${page.number} · ${page.source === "ocr" ? "OCR" : "text layer"} · ${(page.confidence * 100).toFixed(1)}%`;
    drawn[page.number] = page.lines ? page.lines.length : 0;
  }
  return drawn;
}
