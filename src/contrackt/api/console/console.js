// Contrackt web console: key, upload, live progress, local preview with line boxes, views,
// downloads, recent jobs. Document text only ever goes into textContent (never parsed as HTML),
// and nothing is stored but the API key, in this tab's sessionStorage.
import * as api from "./api.js";
import { overlay, renderLocal } from "./render.js";

const $ = (id) => document.getElementById(id);
const state = { jobId: null, result: null, format: "text", file: null, preview: Promise.resolve(0) };

function showError(error) {
  const box = $("error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.hidden = false;
  box.textContent = error.code ? `${error.code}: ${error.message}` : String(error.message || error);
}

function setStatus(text, phase, done, total) {
  $("status").textContent = text;
  $("status").dataset.state = phase;
  const bar = $("progress");
  if (total) {
    bar.max = total;
    bar.value = done;
  } else if (phase === "completed") {
    bar.max = 1;
    bar.value = 1;
  } else {
    bar.removeAttribute("value");  // indeterminate while queued
  }
}

function refreshKeyState() {
  const has = Boolean(api.getKey());
  $("key-state").textContent = has ? "Key set for this tab" : "No key";
  $("key-state").dataset.state = has ? "set" : "unset";
}

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function showView(format) {
  state.format = format;
  for (const tab of document.querySelectorAll(".view-tab")) {
    tab.setAttribute("aria-selected", String(tab.dataset.format === format));
  }
  const view = $("view");
  view.dataset.format = format;
  if (!state.jobId) return;
  view.dataset.loaded = "false";
  const cached = state.result && state.result.job_id === state.jobId ? state.result : null;
  try {
    let body;
    if (format === "json" && cached) {
      body = JSON.stringify(cached, null, 2);  // already here: no second download
    } else {
      const text = await (await api.result(state.jobId, format)).text();
      body = format === "json" ? JSON.stringify(JSON.parse(text), null, 2) : text;
    }
    if (state.format !== format) return;  // another tab was chosen meanwhile
    view.textContent = body;
    view.dataset.loaded = "true";
  } catch (error) {
    if (state.format !== format) return;
    if (error.status === 410 && cached && format === "text") {
      // destroyed on first read (delete_on_read): the JSON this page already holds has the text
      view.textContent = cached.text;
      view.dataset.loaded = "true";
      return;
    }
    view.textContent = "";
    showError(error);
  }
}

async function loadResult(jobId) {
  const response = await api.result(jobId, "json");
  state.result = await response.json();
  const drawn = await state.preview;
  if (drawn) overlay($("pages"), state.result);
  $("pages").dataset.overlaid = "true";
}

function openJob(jobId, withPreview) {
  state.jobId = jobId;
  state.result = null;
  $("job-id").textContent = jobId;
  $("result-section").hidden = false;
  $("view").textContent = "";
  delete $("pages").dataset.overlaid;
  if (!withPreview) {
    $("pages").replaceChildren();
    state.preview = Promise.resolve(0);
  }
}

async function follow(jobId) {
  let last = null;
  $("status").dataset.via = "events";
  try {
    last = await api.followEvents(jobId, ({ event, data }) => {
      if (event === "queued") setStatus("Queued", "queued");
      else if (event === "processing") setStatus("Processing", "processing", data.pages_done || 0, data.pages_total);
      else if (event === "page") setStatus(`Page ${data.n} of ${data.of}`, "processing", data.n, data.of);
      else if (event === "completed") setStatus(`Done: ${data.pages_total} page(s)`, "completed", data.pages_total, data.pages_total);
      else if (event === "failed") setStatus(`Failed: ${data.error ? data.error.code : "unknown"}`, "failed");
    });
  } catch (error) {
    if (error.status === 401) throw error;
  }
  // The stream ended without a verdict (a proxy cut it, the tab slept): poll the job instead.
  while (!last || !["completed", "failed", "error"].includes(last.event)) {
    $("status").dataset.via = "polling";
    const view = await api.job(jobId);
    if (view.status === "completed" || view.status === "failed") {
      last = { event: view.status, data: view };
      if (view.status === "completed") setStatus(`Done: ${view.pages_total} page(s)`, "completed", view.pages_total, view.pages_total);
      else setStatus(`Failed: ${view.error ? view.error.code : "unknown"}`, "failed");
      break;
    }
    setStatus(view.status === "pending" ? "Queued" : `Page ${view.pages_done} of ${view.pages_total || "?"}`,
      view.status, view.pages_done, view.pages_total);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  return last;
}

async function handleFile(file) {
  showError(null);
  if (!api.getKey()) {
    showError({ code: "no_key", message: "Paste an API key first" });
    return;
  }
  setStatus("Uploading", "uploading");
  $("result-section").hidden = false;
  state.preview = renderLocal($("pages"), file).catch((error) => {
    showError({ code: "preview_failed", message: `The page preview could not be drawn (${error.message})` });
    return 0;
  });
  try {
    const accepted = await api.submit(file);
    openJob(accepted.job_id, true);
    const last = await follow(accepted.job_id);
    if (last.event === "completed") {
      await loadResult(accepted.job_id);
      await showView(state.format);
    } else if (last.event === "failed" && last.data.error) {
      showError(last.data.error);
    } else if (last.event === "error") {
      showError(last.data);
    }
  } catch (error) {
    setStatus("Stopped", "error");
    showError(error);
  }
  refreshJobs();
}

async function refreshJobs() {
  const body = $("jobs").querySelector("tbody");
  if (!api.getKey()) {
    body.replaceChildren();
    return;
  }
  try {
    const listed = await api.listJobs(20);
    const rows = listed.jobs.map((j) => {
      const tr = document.createElement("tr");
      tr.dataset.jobId = j.job_id;
      const when = (iso) => (iso ? `${iso.slice(0, 19).replace("T", " ")} UTC` : "");
      const cells = [j.job_id, j.status, `${j.pages_done}/${j.pages_total ?? "?"}`, when(j.created_at), when(j.completed_at)];
      for (const value of cells) {
        const td = document.createElement("td");
        td.textContent = value;
        tr.append(td);
      }
      tr.addEventListener("click", async () => {
        showError(null);
        openJob(j.job_id, j.job_id === state.jobId && state.result !== null);
        if (j.status === "completed") await showView(state.format);
      });
      return tr;
    });
    body.replaceChildren(...rows);
    $("jobs").dataset.count = String(rows.length);
  } catch (error) {
    showError(error);
  }
}

async function downloadPart(kind) {
  if (!state.jobId) return;
  showError(null);
  try {
    if (kind === "receipt") {
      const response = await api.receipt(state.jobId);
      download(await response.blob(), `${state.jobId}.receipt.json`);
    } else if (kind === "pdf") {
      const response = await api.result(state.jobId, "pdf");
      download(await response.blob(), `${state.jobId}.pdf`);
    } else {
      const format = state.format;
      const ext = { json: "json", text: "txt", markdown: "md" }[format];
      const response = await api.result(state.jobId, format);
      download(await response.blob(), `${state.jobId}.${ext}`);
    }
  } catch (error) {
    showError(error);
  }
}

function wire() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    api.setKey($("api-key").value.trim());
    $("api-key").value = "";
    refreshKeyState();
    refreshJobs();
  });
  $("key-forget").addEventListener("click", () => {
    api.setKey("");
    refreshKeyState();
    refreshJobs();
  });
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) handleFile(file);
    $("file").value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) handleFile(file);
  });
  for (const tab of document.querySelectorAll(".view-tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.format));
  }
  $("dl-result").addEventListener("click", () => downloadPart("result"));
  $("dl-pdf").addEventListener("click", () => downloadPart("pdf"));
  $("dl-receipt").addEventListener("click", () => downloadPart("receipt"));
  $("jobs-refresh").addEventListener("click", refreshJobs);
  refreshKeyState();
  refreshJobs();
  document.body.dataset.ready = "true";
}

wire();
