// The console's shell: hash routing between pages, the API-key dialog,
// and timers that stop when the page changes.
import { onKeyNeeded, setAPIKey, apiKey } from './api.js';
import { h, toast } from './ui.js';
import * as models from './models.js';
import * as chat from './chat.js';
import * as finetune from './finetune.js';
import * as collections from './collections.js';
import * as evals from './evals.js';

const pages = { models, chat, finetune, collections, evals };
const main = document.getElementById('main');
let current = null; // { name, timers, alive }

// The key dialog: shown when the API answers 401; resolves when a key is
// entered. Concurrent 401s share one prompt.
let pendingKey = null;
onKeyNeeded((why) => {
  if (pendingKey) return pendingKey;
  const dlg = document.getElementById('key-dialog');
  const input = document.getElementById('key-input');
  document.getElementById('key-error').textContent = why || '';
  input.value = '';
  pendingKey = new Promise((resolve) => {
    const form = document.getElementById('key-form');
    const done = (ev) => {
      ev.preventDefault();
      const k = input.value.trim();
      if (!k) return;
      setAPIKey(k);
      form.removeEventListener('submit', done);
      dlg.close();
      pendingKey = null;
      document.getElementById('forget-key').hidden = false;
      resolve();
    };
    form.addEventListener('submit', done);
    dlg.addEventListener('cancel', (ev) => ev.preventDefault(), { once: true });
  });
  if (!dlg.open) dlg.showModal();
  input.focus();
  return pendingKey;
});

document.getElementById('forget-key').hidden = !apiKey();
document.getElementById('forget-key').addEventListener('click', () => {
  setAPIKey('');
  document.getElementById('forget-key').hidden = true;
  toast('Key forgotten');
  route();
});

// ctx is what a page gets: its parameters, timers bound to its life, and
// a way to say it has loaded (tests and screenshots wait for it).
function makeContext(name, params) {
  const state = { name, timers: [], alive: true };
  current = state;
  return {
    params,
    alive: () => state.alive,
    every(fn, ms) {
      let running = false;
      const tick = async () => {
        if (!state.alive || running || document.hidden) return;
        running = true;
        try { await fn(); } catch (e) { if (state.alive) console.warn(e); } finally { running = false; }
      };
      state.timers.push(setInterval(tick, ms));
      return tick;
    },
    ready() { if (state.alive) main.dataset.ready = name; },
    go(hash) { location.hash = hash; },
  };
}

async function route() {
  const [path, query] = location.hash.replace(/^#\/?/, '').split('?');
  const name = pages[path] ? path : 'models';
  if (current) {
    current.alive = false;
    current.timers.forEach(clearInterval);
  }
  delete main.dataset.ready;
  main.replaceChildren();
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.page === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const page = pages[name];
  document.title = `${page.title} · llmrt`;
  const ctx = makeContext(name, new URLSearchParams(query || ''));
  try {
    await page.render(main, ctx);
  } catch (e) {
    if (ctx.alive()) main.append(h('p.error', { role: 'alert' }, `Could not load the page: ${e.message}`));
  }
}

window.addEventListener('hashchange', () => { route(); main.focus({ preventScroll: true }); });
route();
