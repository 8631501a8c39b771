// Talking to the Contrackt API: the key travels in the X-API-Key header only, never in a URL.
// The event stream is read with fetch() and a body reader, since EventSource cannot send headers.

const KEY_NAME = "contrackt.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY_NAME) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_NAME, key);
  else sessionStorage.removeItem(KEY_NAME);
}

export class ApiError extends Error {
  constructor(status, problem) {
    const title = (problem && (problem.detail || problem.title)) || `HTTP ${status}`;
    super(title);
    this.status = status;
    this.code = (problem && problem.code) || `http_${status}`;
    this.retryAfter = 0;
  }
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

export async function call(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("X-API-Key", getKey());
  const response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
  if (!response.ok) {
    const error = new ApiError(response.status, await problemOf(response));
    error.retryAfter = Number(response.headers.get("Retry-After") || 0);
    throw error;
  }
  return response;
}

export async function submit(file) {
  const form = new FormData();
  form.append("file", file, "upload");  // the file's own name is not sent: the service never keeps it
  const response = await call("/v1/extract", { method: "POST", body: form });
  return response.json();
}

function parseBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  return { event, data: JSON.parse(data.join("\n")) };
}

// Calls onEvent({event, data}) for each server-sent event; resolves with the last one.
export async function followEvents(jobId, onEvent, signal) {
  const response = await call(`/v1/jobs/${encodeURIComponent(jobId)}/events`, {
    headers: { Accept: "text/event-stream" },
    signal,
  });
  const decoder = new TextDecoder();
  let buffer = "";
  let last = null;
  for await (const value of response.body) {
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      const parsed = parseBlock(block);
      if (parsed) {
        last = parsed;
        onEvent(parsed);
      }
    }
  }
  return last;
}

export async function job(jobId) {
  return (await call(`/v1/jobs/${encodeURIComponent(jobId)}`)).json();
}

export async function result(jobId, format) {
  return call(`/v1/jobs/${encodeURIComponent(jobId)}/result?format=${encodeURIComponent(format)}`);
}

export async function receipt(jobId) {
  // 409 not_purged until the document is destroyed (it is, right after processing): wait and ask again
  for (let attempt = 0; ; attempt++) {
    try {
      return await call(`/v1/jobs/${encodeURIComponent(jobId)}/receipt`);
    } catch (error) {
      if (error.code !== "not_purged" || attempt >= 10 || error.retryAfter > 10) throw error;
      await new Promise((resolve) => setTimeout(resolve, Math.max(1, error.retryAfter) * 1000));
    }
  }
}

export async function listJobs(limit = 20) {
  return (await call(`/v1/jobs?limit=${limit}`)).json();
}
