// Small DOM helpers shared by the pages.

// h builds an element: h('div.card#id', {attrs/props/on*}, ...children).
export function h(spec, attrs, ...children) {
  const m = /^([a-z0-9]+)?((?:[.#][\w-]+)*)$/i.exec(spec);
  const el = document.createElement((m && m[1]) || 'div');
  for (const part of ((m && m[2]) || '').match(/[.#][\w-]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'className' || k === 'value' || k === 'textContent') el[k] = v;
    else if (k === 'style') el.style.cssText = v; // CSSOM: the CSP forbids style attributes
    else if (k in el && !['list', 'form', 'type'].includes(k) && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtBytes(n) {
  if (n === undefined || n === null) return '-';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = Math.abs(n);
  while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
  return (n < 0 ? '-' : '') + (i === 0 ? x : x.toFixed(x < 10 ? 2 : 1)) + ' ' + u[i];
}

export function fmtNum(x, digits = 3) {
  if (x === undefined || x === null || Number.isNaN(x)) return '-';
  if (Number.isInteger(x)) return String(x);
  return Number(x).toPrecision(digits);
}

export function fmtTime(t) {
  if (!t) return '-';
  const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  if (Number.isNaN(d.getTime()) || d.getFullYear() < 2000) return '-';
  return d.toLocaleTimeString([], { hour12: false });
}

export function fmtDuration(s) {
  if (s < 0) return 'until unloaded';
  if (s < 120) return `${Math.round(s)}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${(s / 3600).toFixed(1)}h`;
}

let toastTimer;
// toast shows a short message (role=status, announced by screen readers).
export function toast(msg, isError) {
  const t = document.getElementById('toast');
  t.textContent = msg;
  t.className = isError ? 'show error' : 'show';
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.className = ''; }, isError ? 8000 : 3000);
}

// errorBox shows an API error where the action was taken.
export function showError(box, err) {
  box.textContent = err ? (err.message || String(err)) : '';
  box.hidden = !err;
}

export function badge(status) {
  return h('span.badge', { dataset: { status } }, status);
}

// table builds a table from column headers and rows of cells (arrays, or
// tr elements). Each cell carries its column's name, which narrow screens
// show beside it when the rows stack (style.css).
export function table(headers, rows, opts = {}) {
  const body = rows.map((r) => (r instanceof Node ? r : h('tr', r.map((c) => h('td', c)))));
  for (const tr of body) {
    [...tr.children].forEach((cell, i) => { if (headers[i]) cell.dataset.label = headers[i]; });
  }
  return h('div.table-wrap', h('table', { className: ('stack ' + (opts.className || '')).trim() },
    opts.caption ? h('caption', opts.caption) : null,
    h('thead', h('tr', headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', body.length ? body : h('tr', h('td.empty', { colSpan: headers.length }, opts.empty || 'none')))));
}

// field wraps an input with its label.
export function field(label, input, hint) {
  return h('label.field', h('span.label', label), input, hint ? h('span.hint', hint) : null);
}

export function select(options, value, attrs = {}) {
  const s = h('select', attrs);
  for (const o of options) {
    const [v, text] = Array.isArray(o) ? o : [o, o];
    s.append(h('option', { value: v, selected: v === value }, text));
  }
  return s;
}

// section makes a titled card.
export function card(title, ...children) {
  return h('section.card', h('h2', title), ...children);
}

// busy disables a button while fn runs.
export async function busy(btn, fn) {
  btn.disabled = true;
  btn.setAttribute('aria-busy', 'true');
  try { return await fn(); } finally {
    btn.disabled = false;
    btn.removeAttribute('aria-busy');
  }
}

// update rebuilds box from build() when sig changed (or force), keeping
// keyboard focus: the focused control is found again by id, label or text
// in the new content; while a select or text field inside box has focus,
// the box is left as it is (its value is being chosen).
export function update(box, sig, build, force) {
  if (!force && box.dataset.sig === sig) return;
  const a = document.activeElement;
  const inside = a && a !== box && box.contains(a);
  if (inside && !force && (a.tagName === 'SELECT' || a.tagName === 'TEXTAREA' || (a.tagName === 'INPUT' && a.type !== 'checkbox'))) return;
  const key = inside ? { id: a.id, label: a.getAttribute('aria-label'), text: a.textContent, tag: a.tagName } : null;
  clear(box, build());
  box.dataset.sig = sig;
  if (!key) return;
  let b = key.id ? box.querySelector('#' + CSS.escape(key.id)) : null;
  if (!b) {
    b = [...box.querySelectorAll(key.tag)].find((el) => (key.label ? el.getAttribute('aria-label') === key.label : el.textContent === key.text));
  }
  if (b) b.focus({ preventScroll: true });
}
