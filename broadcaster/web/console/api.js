// The controller's HTTP API: JSON calls with the session's CSRF token, and uploads with progress.
// The session itself is an HttpOnly cookie the page never sees; the CSRF token the login
// returned is kept in localStorage so a reload or a second tab keeps working.

const CSRF_KEY = "bc.csrf";

/** An API error: the HTTP status, the error code and the server's message. */
export class ApiError extends Error {
  constructor(status, code, message, detail) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

let onUnauthorized = () => {};

/** Call `fn` whenever the controller says the session is gone (401). */
export function whenLoggedOut(fn) { onUnauthorized = fn; }

/** The CSRF token of the current session ("" if none). */
export function csrf() { return localStorage.getItem(CSRF_KEY) || ""; }

/** Remember (or forget, with "") the session's CSRF token. */
export function setCsrf(token) {
  if (token) localStorage.setItem(CSRF_KEY, token);
  else localStorage.removeItem(CSRF_KEY);
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) q.append(k, String(one));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function parse(resp) {
  let body = null;
  try { body = await resp.json(); } catch { body = null; }
  if (!resp.ok) {
    const err = new ApiError(resp.status, body?.error || `http_${resp.status}`,
      body?.message || resp.statusText, body?.detail);
    if (resp.status === 401) onUnauthorized(err);
    throw err;
  }
  return body;
}

/** One JSON call: api("GET", "/api/zones"), api("POST", "/api/login", {name, password}). */
export async function api(method, path, body, params) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf();
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path + query(params), init);
  } catch (e) {
    throw new ApiError(0, "network", String(e));
  }
  return parse(resp);
}

/** POST a file as the body, with query fields; onProgress(fraction) as it goes up. */
export function upload(path, file, params, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path + query(params));
    xhr.setRequestHeader("X-CSRF-Token", csrf());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "text";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress?.(e.loaded / e.total); };
    xhr.upload.onload = () => onProgress?.(1);
    xhr.onerror = () => reject(new ApiError(0, "network", "network error"));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { body = null; }
      if (xhr.status >= 200 && xhr.status < 300) { resolve(body); return; }
      const err = new ApiError(xhr.status, body?.error || `http_${xhr.status}`,
        body?.message || xhr.statusText);
      if (xhr.status === 401) onUnauthorized(err);
      reject(err);
    };
    xhr.send(file);
  });
}

/** Does the controller serve this path (from its OpenAPI document, when there is one)? */
let paths = null;
export async function hasPath(path) {
  if (paths === null) {
    try {
      const doc = await (await fetch("/api/openapi.json")).json();
      paths = new Set(Object.keys(doc.paths || {}));
    } catch {
      paths = new Set();
    }
  }
  return paths.has(path);
}
