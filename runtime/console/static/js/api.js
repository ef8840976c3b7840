// The API client: every call carries the key from sessionStorage; a 401
// asks for the key and retries once it is given.

const KEY = 'llmrt.apiKey';

export class APIError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || null;
    this.param = e.param || null;
  }
}

export function apiKey() { return sessionStorage.getItem(KEY) || ''; }
export function setAPIKey(k) { k ? sessionStorage.setItem(KEY, k) : sessionStorage.removeItem(KEY); }

// askKey is set by the app: it shows the key dialog and resolves once a
// key was entered.
let askKey = async () => { throw new Error('no key prompt'); };
export function onKeyNeeded(fn) { askKey = fn; }

function headers(extra) {
  const h = new Headers(extra || {});
  const k = apiKey();
  if (k) h.set('Authorization', 'Bearer ' + k);
  return h;
}

// raw sends a request and returns the Response; 401 prompts for the key
// and retries.
export async function raw(method, path, { body, json, signal, hdrs } = {}) {
  for (let attempt = 0; ; attempt++) {
    const h = headers(hdrs);
    let payload = body;
    if (json !== undefined) {
      h.set('Content-Type', 'application/json');
      payload = JSON.stringify(json);
    }
    const resp = await fetch(path, { method, headers: h, body: payload, signal });
    if (resp.status === 401 && attempt < 3) {
      await askKey(apiKey() ? 'That key was refused.' : '');
      continue;
    }
    if (!resp.ok) {
      let b = null;
      try { b = await resp.json(); } catch { /* not JSON */ }
      throw new APIError(resp.status, b);
    }
    return resp;
  }
}

export async function call(method, path, json, opts = {}) {
  const resp = await raw(method, path, { ...opts, json });
  const ct = resp.headers.get('Content-Type') || '';
  return ct.includes('json') ? resp.json() : resp.text();
}

export const get = (path, opts) => call('GET', path, undefined, opts);
export const post = (path, json, opts) => call('POST', path, json === undefined ? {} : json, opts);
export const del = (path, opts) => call('DELETE', path, undefined, opts);

export async function upload(path, form) {
  const resp = await raw('POST', path, { body: form });
  return resp.json();
}

// stream POSTs json and calls onEvent with every server-sent event's
// parsed data until [DONE].
export async function stream(path, json, onEvent, signal) {
  const resp = await raw('POST', path, { json, signal });
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
      if (!data) continue;
      if (data === '[DONE]') return;
      const ev = JSON.parse(data);
      if (ev.error) throw new APIError(500, ev);
      onEvent(ev);
    }
  }
}

// download fetches path with the key and saves it under its file name.
export async function download(path, fallbackName) {
  const resp = await raw('GET', path);
  const cd = resp.headers.get('Content-Disposition') || '';
  const m = /filename="([^"]+)"/.exec(cd);
  const blob = await resp.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = m ? m[1] : fallbackName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return blob.size;
}
