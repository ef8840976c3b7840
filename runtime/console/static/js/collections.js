// Collections: create one, upload documents, see its sources and their
// chunks, try a query with its scores.
import { get, post, del, upload } from './api.js';
import { h, clear, card, table, field, select, fmtBytes, fmtTime, toast, busy, showError } from './ui.js';

export const title = 'Collections';

export async function render(root, ctx) {
  const name = h('input#coll-name', { required: true, pattern: '[A-Za-z0-9][A-Za-z0-9._\\-]*', placeholder: 'handbook', autocomplete: 'off' });
  const size = h('input#coll-chunk', { type: 'number', min: 16, placeholder: '256' });
  const overlap = h('input#coll-overlap', { type: 'number', min: 0, placeholder: '32' });
  const createErr = h('p.error', { role: 'alert', hidden: true });
  const createBtn = h('button.primary#coll-create', { type: 'submit' }, 'Create');
  const createForm = h('form.row', {
    onsubmit: (ev) => {
      ev.preventDefault();
      busy(createBtn, async () => {
        showError(createErr, null);
        try {
          const body = { name: name.value.trim() };
          if (size.value) body.chunk_size = Number(size.value);
          if (overlap.value) body.chunk_overlap = Number(overlap.value);
          const c = await post('/v1/collections', body);
          toast(`Created ${c.id}`);
          selected = c.id;
          name.value = '';
          await refresh();
        } catch (e) { showError(createErr, e); }
      });
    },
  }, field('Name', name), field('Chunk size (tokens)', size), field('Overlap', overlap), createBtn);

  const listBox = h('div');
  const detail = h('div#coll-detail');
  clear(root, h('h1', 'Collections'), card('New collection', createForm, createErr), card('Collections', listBox), detail);

  let selected = ctx.params.get('name') || '';

  async function refresh() {
    const list = (await get('/v1/collections')).data;
    if (!ctx.alive()) return;
    if (!list.some((c) => c.id === selected)) selected = list.length ? list[0].id : '';
    clear(listBox, table(['Collection', 'Embedding model', 'Dimensions', 'Metric', 'Created'], list.map((c) =>
      h('tr', { className: c.id === selected ? 'selected' : '', dataset: { collection: c.id } },
        h('td', h('button.link', { type: 'button', 'aria-pressed': String(c.id === selected), onclick: () => { selected = c.id; refresh(); } }, c.id)),
        h('td', c.model), h('td', c.dim), h('td', c.metric), h('td', fmtTime(c.created)))), { empty: 'No collections yet.' }));
    if (selected) await showCollection(selected);
    else clear(detail);
  }

  async function showCollection(id) {
    const c = await get(`/v1/collections/${encodeURIComponent(id)}`);
    if (!ctx.alive() || selected !== id) return;
    const files = h('input#coll-files', { type: 'file', multiple: true, accept: '.md,.markdown,.html,.htm,.pdf,.txt,.text', required: true });
    const upErr = h('p.error', { role: 'alert', hidden: true });
    const report = h('div.report#coll-report');
    const upBtn = h('button.primary#coll-upload', { type: 'submit' }, 'Upload and index');
    const upForm = h('form.row', {
      onsubmit: (ev) => {
        ev.preventDefault();
        if (!files.files.length) return;
        busy(upBtn, async () => {
          showError(upErr, null);
          const fd = new FormData();
          for (const f of files.files) fd.append('file', f, f.name);
          try {
            const r = await upload(`/v1/collections/${encodeURIComponent(id)}/documents`, fd);
            const parts = [['added', r.added], ['updated', r.updated], ['unchanged', r.unchanged]].filter(([, l]) => l.length).map(([k, l]) => `${k}: ${l.join(', ')}`);
            toast(`Indexed ${r.chunks} chunks`);
            await showCollection(id);
            clear(document.getElementById('coll-report') || report, h('p', `${r.chunks} chunks, ${r.tokens} tokens. ${parts.join('; ')}`),
              r.failed.map((f) => h('p.error', `${f.path}: ${f.error}`)));
          } catch (e) { showError(upErr, e); }
        });
      },
    }, field('Documents (.md .html .pdf .txt)', files), upBtn);

    const chunkBox = h('div#coll-chunks');
    const sources = table(['Source', 'Format', 'Chunks', 'Tokens', 'Size', 'Added', ''], (c.sources || []).map((s) =>
      h('tr', { dataset: { source: s.path } },
        h('td', s.path), h('td', s.format), h('td', s.chunks), h('td', s.tokens), h('td', fmtBytes(s.size)), h('td', fmtTime(s.added)),
        h('td.actions', h('button.small', { type: 'button', onclick: () => showChunks(id, s.path, chunkBox), 'aria-label': `Chunks of ${s.path}` }, 'Chunks'),
          h('button.small', { type: 'button', 'aria-label': `Remove ${s.path}`, onclick: (ev) => busy(ev.currentTarget, async () => {
            try { await del(`/v1/collections/${encodeURIComponent(id)}/documents?source=${encodeURIComponent(s.path)}`); toast(`Removed ${s.path}`); } catch (e) { toast(e.message, true); }
            await showCollection(id);
          }) }, 'Remove')))), { empty: 'No documents yet: upload some above.', className: 'sources' });

    const q = h('input#coll-query', { type: 'search', placeholder: 'a question', required: true });
    const k = h('input#coll-k', { type: 'number', min: 1, max: 100, value: '5' });
    const mode = select(['hybrid', 'vector', 'keyword'], 'hybrid', { id: 'coll-mode' });
    const mmr = h('input#coll-mmr', { type: 'number', min: 0, max: 1, step: '0.1', value: '0' });
    const qErr = h('p.error', { role: 'alert', hidden: true });
    const hits = h('div#coll-hits');
    const qBtn = h('button.primary#coll-search', { type: 'submit' }, 'Search');
    const qForm = h('form.row', {
      onsubmit: (ev) => {
        ev.preventDefault();
        busy(qBtn, async () => {
          showError(qErr, null);
          try {
            const r = await post(`/v1/collections/${encodeURIComponent(id)}/query`, { query: q.value, top_k: Number(k.value), mode: mode.value, mmr: Number(mmr.value) });
            // Scores differ in kind (rrf ranks only; cosine, bm25): each is labelled.
            const ranked = (rank, score) => (rank ? `#${rank} (${Number(score).toFixed(3)})` : '-');
            clear(hits, table(['#', 'Score', 'Vector rank (similarity)', 'BM25 rank (score)', 'Source', 'Passage'], r.data.map((x, i) => [i + 1, `${x.score_kind} ${x.score.toFixed(4)}`,
              ranked(x.vector_rank, x.vector_score), ranked(x.bm25_rank, x.bm25_score),
              h('span', x.chunk.source, x.chunk.title ? h('div.muted', x.chunk.title) : null), h('div.excerpt', x.chunk.text)]), { empty: 'Nothing found.', className: 'hits' }));
          } catch (e) { showError(qErr, e); }
        });
      },
    }, field('Query', q), field('Top k', k), field('Mode', mode), field('MMR λ (0: off)', mmr), qBtn);

    const delBtn = h('button.danger', { type: 'button', onclick: (ev) => {
      if (!confirm(`Delete the collection ${id} and its index?`)) return;
      busy(ev.currentTarget, async () => {
        try { await del(`/v1/collections/${encodeURIComponent(id)}`); toast(`Deleted ${id}`); selected = ''; } catch (e) { toast(e.message, true); }
        await refresh();
      });
    } }, 'Delete collection');

    clear(detail, h('section.card#coll-view', { dataset: { collection: id } },
      h('h2', `Collection ${id}`),
      h('p', `${c.documents} documents · ${c.chunks} chunks · ${c.tokens} tokens · model ${c.model} (${c.dim} dimensions, ${c.metric}) · chunks of ${c.chunking.size || '-'} tokens · index ${fmtBytes(c.index_bytes)}, disk ${fmtBytes(c.disk_bytes)}`),
      upForm, upErr, report, h('h3', 'Sources'), sources, chunkBox, h('h3', 'Try a query'), qForm, qErr, hits, h('div.row.end', delBtn)));
  }

  async function showChunks(id, src, box) {
    try {
      const r = await get(`/v1/collections/${encodeURIComponent(id)}/chunks?source=${encodeURIComponent(src)}`);
      clear(box, h('h3', `Chunks of ${src}`), h('ol.chunks', r.data.map((c) => h('li',
        h('div.muted', `${c.title || '(no heading)'} · bytes ${c.start}–${c.end} · ${c.tokens} tokens`), h('div.excerpt', c.text)))));
      box.scrollIntoView({ block: 'nearest' });
    } catch (e) { toast(e.message, true); }
  }

  await refresh();
  ctx.ready();
}
