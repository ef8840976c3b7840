// Models and memory: loaded models with their devices, layers, KV cache,
// queue and adapters; each device's ledger as a bar of who reserved what;
// the scheduler's queue and recent decisions; load, unload and keep-alive.
import { get, post } from './api.js';
import { h, clear, card, table, field, select, fmtBytes, fmtTime, fmtDuration, badge, toast, busy, showError, update } from './ui.js';
import { PALETTE } from './charts.js';

export const title = 'Models';

const KEEP = [['300', '5 minutes'], ['1800', '30 minutes'], ['3600', '1 hour'], ['86400', '1 day'], ['-1', 'until unloaded'], ['0', 'unload when idle']];

function ownerName(o) { return o.kind ? `${o.kind} ${o.id}` : o.id; }

// ledgerBar draws one device: a segment per consumer, the rest available.
function ledgerBar(dev, consumers, colors) {
  const budget = Math.max(dev.budget, 1);
  const bar = h('div.bar', { role: 'img' });
  const parts = [];
  for (const c of consumers) {
    const b = c.per_device[dev.id] || 0;
    if (b <= 0) continue;
    const name = ownerName(c.owner);
    parts.push(`${name} ${fmtBytes(b)}`);
    bar.append(h('span.seg', { style: `width:${Math.max(0.5, (100 * b) / budget)}%;background:${colors(name)}`, title: `${name}: ${fmtBytes(b)}` }));
  }
  bar.setAttribute('aria-label', `${dev.id}: ${fmtBytes(dev.reserved)} reserved of ${fmtBytes(dev.budget)}${parts.length ? ' by ' + parts.join(', ') : ''}`);
  const legend = h('ul.legend', consumers.filter((c) => (c.per_device[dev.id] || 0) > 0).map((c) => {
    const name = ownerName(c.owner);
    return h('li', h('span.swatch', { style: `background:${colors(name)}` }), `${name} `, h('b', fmtBytes(c.per_device[dev.id])));
  }));
  return h('div.ledger', { dataset: { device: dev.id } },
    h('div.ledger-head', h('b', dev.id), ` ${dev.name || ''}${dev.backend ? ' (' + dev.backend + ')' : ''}`,
      h('span.muted', ` ${fmtBytes(dev.reserved)} reserved of ${fmtBytes(dev.budget)} budget · ${fmtBytes(dev.available)} available · total ${fmtBytes(dev.total)}, margin ${fmtBytes(dev.margin)}`)),
    bar, legend);
}

export async function render(root, ctx) {
  const colorMap = new Map();
  const colors = (name) => {
    if (!colorMap.has(name)) colorMap.set(name, PALETTE[colorMap.size % PALETTE.length]);
    return colorMap.get(name);
  };
  const loadErr = h('p.error', { role: 'alert', hidden: true });
  const modelSel = h('input', { id: 'load-model', list: 'load-models', placeholder: 'stories260K, BASE+ADAPTER, ft:…', required: true, autocomplete: 'off' });
  const modelList = h('datalist#load-models');
  const keepSel = select(KEEP, '300', { id: 'load-keep' });
  const loadBtn = h('button.primary', { type: 'submit' }, 'Load');
  const loadForm = h('form.row', {
    onsubmit: (ev) => {
      ev.preventDefault();
      busy(loadBtn, async () => {
        showError(loadErr, null);
        try {
          const m = await post('/v1/system/load', { model: modelSel.value.trim(), keep_alive: Number(keepSel.value) });
          toast(`Loaded ${m.name}`);
          await refresh(true);
        } catch (e) { showError(loadErr, e); }
      });
    },
  }, field('Model', modelSel), modelList, field('Keep loaded', keepSel), loadBtn);

  const loadedBox = h('div');
  const ledgerBox = h('div');
  const queueBox = h('div');
  const decisionsBox = h('div');
  const notesBox = h('div');
  clear(root,
    h('h1', 'Models and memory'),
    card('Load a model', loadForm, loadErr),
    card('Loaded models', loadedBox),
    card('Memory ledgers', notesBox, ledgerBox),
    card('Waiting for memory', queueBox),
    card('Recent scheduler decisions', decisionsBox));

  async function setKeep(name, v) {
    try {
      await post('/v1/system/keep_alive', { model: name, keep_alive: Number(v) });
      toast(`Keep-alive of ${name}: ${fmtDuration(Number(v))}`);
    } catch (e) { toast(e.message, true); }
    await refresh(true);
  }

  async function unload(btn, name) {
    await busy(btn, async () => {
      try {
        await post('/v1/system/unload', { model: name });
        toast(`Unloaded ${name}`);
      } catch (e) { toast(e.message, true); }
    });
    await refresh(true);
  }

  async function refresh(force) {
    const [sys, list] = await Promise.all([get('/v1/system'), get('/v1/models')]);
    if (!ctx.alive()) return;
    force = force === true;
    clear(modelList, (list.data || []).map((m) => h('option', { value: m.id }, m.kind === 'adapter' ? `adapter of ${m.parent}` : 'model')));
    const sc = sys.scheduler || { devices: [], consumers: [], reservations: [], queue: [], decisions: [] };
    const resOf = (name) => sc.reservations.filter((r) => r.owner.kind === 'model' && r.owner.id === name);
    const rows = (sys.models || []).map((m) => {
      const st = m.stats || {};
      const placement = resOf(m.name).flatMap((r) => r.per_device).map((d) =>
        h('div', `${d.device}: ${d.layers ? d.layers + ' layers, ' : ''}${fmtBytes((d.weights || 0) + (d.kv_cache || 0) + (d.compute || 0) + (d.output || 0))}`));
      const kvPct = st.kv_cells ? Math.round((100 * st.kv_cells_used) / st.kv_cells) : 0;
      const keepVal = String(m.keep_alive_seconds);
      const opts = KEEP.some(([v]) => v === keepVal) ? KEEP : [[keepVal, fmtDuration(m.keep_alive_seconds)], ...KEEP];
      const keep = select(opts, keepVal, { 'aria-label': `Keep-alive of ${m.name}`, onchange: (ev) => setKeep(m.name, ev.target.value) });
      const unloadBtn = h('button', { type: 'button', onclick: (ev) => unload(ev.currentTarget, m.name), 'aria-label': `Unload ${m.name}` }, 'Unload');
      return h('tr', { dataset: { model: m.name } },
        h('td', h('b', m.name), m.pinned ? h('span.muted', ' pinned') : null),
        h('td', placement.length ? placement : '-'),
        h('td', h('meter', { min: 0, max: st.kv_cells || 1, value: st.kv_cells_used || 0, title: `${kvPct}%` }), ` ${st.kv_cells_used}/${st.kv_cells} cells`),
        h('td', `${st.active_sequences} running, ${st.queued_requests} queued, ${m.active_requests} leased`),
        h('td', (m.adapters || []).length ? m.adapters.join(', ') : '-'),
        h('td', keep, m.expires_at ? h('div.muted', `idle until ${fmtTime(m.expires_at)}`) : null),
        h('td', unloadBtn));
    });
    update(loadedBox, JSON.stringify([sys.models, sc.reservations]), () => table(['Model', 'Devices and layers', 'KV cache', 'Requests', 'Adapters', 'Keep-alive', ''], rows,
      { empty: 'No model is loaded: models load on first use, or from the form above.', className: 'models' }), force);
    clear(notesBox, (sc.notes || []).concat(sc.warnings || []).map((n) => h('p.muted', n)));
    update(ledgerBox, JSON.stringify([sc.devices, sc.consumers]), () => (sc.devices.length ? sc.devices.map((d) => ledgerBar(d, sc.consumers, colors)) : h('p.muted', 'No scheduler.')), force);
    update(queueBox, JSON.stringify(sc.queue), () => (sc.queue.length ? table(['#', 'Who', 'Kind', 'Since', 'Needs'], sc.queue.map((q) => [q.position, ownerName(q.owner), q.kind, fmtTime(q.since),
      q.need.map((n) => `${n.device} ${fmtBytes((n.weights || 0) + (n.kv_cache || 0) + (n.compute || 0))}`).join(', ')])) : h('p.muted', 'Nothing is waiting.')), force);
    const decisions = (sc.decisions || []).slice(-25).reverse();
    update(decisionsBox, JSON.stringify(decisions), () => table(['Time', 'Action', 'Who', 'Reason'], decisions.map((d) => [fmtTime(d.time), badge(d.action), ownerName(d.owner), d.reason]),
      { empty: 'No decisions yet.', className: 'decisions' }), force);
  }

  await refresh();
  ctx.every(refresh, 2000);
  if (ctx.params.get('model')) modelSel.value = ctx.params.get('model');
  ctx.ready();
}
