// Chat with any model or adapter, optionally with retrieval from a
// collection (the cited passages beside the answer), streamed, with token
// rates.
import { get, post, stream } from './api.js';
import { h, clear, field, select, toast } from './ui.js';

export const title = 'Chat';

// Feedback: sendFeedback posts {type: "rating"|"correction", source:
// "human", completion_id, choice, rating: "good"|"bad" | correction} for
// the answer's completion id to the server's feedback API (a null path
// would leave the buttons disabled, saying why).
const FEEDBACK_PATH = '/v1/feedback';
async function sendFeedback(completionID, kind, value) {
  if (!FEEDBACK_PATH) throw new Error('this server has no feedback API yet');
  const body = { type: kind, source: 'human', completion_id: completionID, choice: 0 };
  if (kind === 'rating') body.rating = value;
  else body.correction = value;
  return post(FEEDBACK_PATH, body);
}

function num(input) {
  const v = input.value.trim();
  return v === '' ? undefined : Number(v);
}

export async function render(root, ctx) {
  const [models, cols] = await Promise.all([get('/v1/models'), get('/v1/collections')]);
  if (!ctx.alive()) return;
  const ids = (models.data || []).map((m) => m.id);
  const model = h('input#chat-model', { list: 'chat-models', value: ctx.params.get('model') || (ids.includes('stories260K') ? 'stories260K' : ids[0] || ''), autocomplete: 'off', required: true });
  const modelList = h('datalist#chat-models', (models.data || []).map((m) => h('option', { value: m.id }, m.kind === 'adapter' ? `adapter of ${m.parent}` : 'model')));
  const coll = select([['', 'none'], ...(cols.data || []).map((c) => [c.id, c.id])], ctx.params.get('collection') || '', { id: 'chat-collection' });
  const ragK = h('input#chat-rag-k', { type: 'number', min: 1, max: 32, value: '4' });
  const temp = h('input#chat-temp', { type: 'number', step: '0.05', min: 0, max: 2, value: '0.8' });
  const topP = h('input#chat-top-p', { type: 'number', step: '0.01', min: 0, max: 1, value: '0.95' });
  const topK = h('input#chat-top-k', { type: 'number', min: 0, value: '40' });
  const maxTok = h('input#chat-max-tokens', { type: 'number', min: 1, value: '256' });
  const seed = h('input#chat-seed', { type: 'number', placeholder: 'random' });
  const system = h('textarea#chat-system', { rows: 2, placeholder: 'optional system prompt' });
  const settings = h('details.settings', { open: window.innerWidth > 800 },
    h('summary', 'Settings'),
    h('div.grid2', field('Model or adapter', model, 'BASE+NAME and ft:… work too'), modelList,
      field('Collection (RAG)', coll), field('Passages', ragK),
      field('Temperature', temp), field('top_p', topP), field('top_k', topK), field('Max tokens', maxTok), field('Seed', seed)),
    field('System prompt', system));

  const log = h('ol.chat-log#chat-log', { 'aria-live': 'polite' });
  const citations = h('div.citations#citations', h('p.muted', coll.value ? `The passages retrieved from ${coll.value} appear here.` : 'Pick a collection to see the passages an answer used.'));
  const input = h('textarea#chat-input', { rows: 3, placeholder: 'Message (Enter sends, Shift+Enter for a new line)', 'aria-label': 'Message' });
  const send = h('button.primary#chat-send', { type: 'submit' }, 'Send');
  const stop = h('button#chat-stop', { type: 'button', disabled: true }, 'Stop');
  const reset = h('button#chat-clear', { type: 'button' }, 'New chat');
  const form = h('form.composer', { onsubmit: (ev) => { ev.preventDefault(); ask(); } }, input, h('div.row', send, stop, reset));
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); ask(); }
  });

  clear(root, h('h1', 'Chat'),
    h('div.chat-layout', h('div.chat-main', log, form), h('aside.chat-side', settings, h('section.card.cites-card', h('h2', 'Passages'), citations))));

  let history = [];
  let controller = null;
  reset.addEventListener('click', () => { history = []; clear(log); clear(citations, h('p.muted', 'New chat.')); input.focus(); });
  stop.addEventListener('click', () => controller && controller.abort());

  // The retrieved passages, those the answer cites as [n] marked "cited".
  function showCitations(cits, cited = []) {
    if (!cits || !cits.length) {
      clear(citations, h('p.muted', coll.value ? 'No passages were retrieved.' : 'No collection was used.'));
      return;
    }
    clear(citations, h('ol.cites', cits.map((c) => h('li.cite', { dataset: { source: c.source, cited: String(cited.includes(c.index)) } },
      h('div', h('b', `[${c.index}] `), h('span.source', c.source), c.title ? h('span.muted', ` · ${c.title}`) : null,
        cited.includes(c.index) ? h('b', ' · cited') : null),
      h('div.muted', `score ${Number(c.score).toFixed(3)} · bytes ${c.start}–${c.end}`),
      h('blockquote.excerpt', c.excerpt)))));
  }

  async function ask() {
    const text = input.value.trim();
    if (!text || controller) return;
    input.value = '';
    const userMsg = { role: 'user', content: text };
    const msgs = [];
    if (system.value.trim()) msgs.push({ role: 'system', content: system.value.trim() });
    msgs.push(...history, userMsg);
    log.append(h('li.msg.user', h('div.who', 'You'), h('div.text', text)));
    const out = h('div.text');
    const stats = h('div.stats.muted', 'waiting…');
    const fb = feedbackButtons();
    const item = h('li.msg.assistant', { dataset: { state: 'streaming', chunks: '0' } }, h('div.who', model.value), out, stats, fb);
    log.append(item);
    item.scrollIntoView({ block: 'end' });
    const body = {
      model: model.value.trim(), messages: msgs, stream: true, stream_options: { include_usage: true },
      temperature: num(temp), top_p: num(topP), top_k: num(topK), max_tokens: num(maxTok), seed: num(seed),
    };
    if (coll.value) body.rag = { collection: coll.value, top_k: num(ragK) || 4 };
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    const t0 = performance.now();
    let first = 0;
    let chunks = 0;
    let usage = null;
    let answer = '';
    let finish = '';
    let retrieved = null;
    try {
      await stream('/v1/chat/completions', body, (ev) => {
        if (ev.id) item.dataset.completion = ev.id;
        if (ev.retrieved) { retrieved = ev.retrieved; showCitations(retrieved); }
        if (ev.citations) showCitations(retrieved, ev.citations.map((c) => c.index));
        if (ev.usage) usage = ev.usage;
        for (const c of ev.choices || []) {
          if (c.delta && c.delta.content) {
            if (!first) first = performance.now();
            answer += c.delta.content;
            out.textContent = answer;
            chunks++;
            item.dataset.chunks = String(chunks);
            stats.textContent = `streaming… ${((performance.now() - first) / 1000).toFixed(1)} s`;
          }
          if (c.finish_reason) finish = c.finish_reason;
        }
      }, controller.signal);
      if (!coll.value) showCitations(null);
      const end = performance.now();
      const n = usage ? usage.completion_tokens : chunks;
      const secs = first ? (end - first) / 1000 : 0;
      const rate = secs > 0 && n > 1 ? ((n - 1) / secs) : 0;
      item.dataset.tokens = String(n);
      stats.textContent = `${n} tokens · ${rate ? rate.toFixed(1) + ' tok/s' : '-'} · first token ${first ? Math.round(first - t0) : '-'} ms` +
        (usage ? ` · prompt ${usage.prompt_tokens} tokens` : '') + (finish ? ` · ${finish}` : '');
      history.push(userMsg, { role: 'assistant', content: answer });
      item.dataset.state = 'done';
    } catch (e) {
      item.dataset.state = 'error';
      if (e.name === 'AbortError') {
        stats.textContent = 'stopped';
        if (answer) history.push(userMsg, { role: 'assistant', content: answer });
      } else {
        stats.textContent = '';
        out.append(h('p.error', { role: 'alert' }, e.message));
        toast(e.message, true);
      }
    } finally {
      controller = null;
      send.disabled = false;
      stop.disabled = true;
    }
  }

  // feedbackButtons rate or correct an answer; item.dataset.completion is
  // the answer's completion id, known once it streams.
  function feedbackButtons() {
    const why = FEEDBACK_PATH ? '' : 'Feedback needs a feedback API, which this server does not have yet.';
    const box = h('div.feedback', { title: why || null });
    const send = (kind, value) => sendFeedback(box.closest('li').dataset.completion, kind, value)
      .then(() => toast('Thanks: feedback recorded')).catch((e) => toast(e.message, true));
    const correction = h('form.row', { hidden: true, onsubmit: (ev) => { ev.preventDefault(); send('correction', text.value); correction.hidden = true; } });
    const text = h('textarea', { rows: 2, 'aria-label': 'The correct answer' });
    correction.append(text, h('button.small', { type: 'submit' }, 'Send correction'));
    const b = (label, onclick) => h('button.small', { type: 'button', disabled: !FEEDBACK_PATH, title: why || null, onclick }, label);
    box.append(b('Good answer', () => send('rating', 'good')), b('Bad answer', () => send('rating', 'bad')),
      b('Correct…', () => { correction.hidden = false; text.focus(); }),
      FEEDBACK_PATH ? null : h('span.muted', ' (feedback: not available on this server)'), correction);
    return box;
  }

  ctx.ready();
  input.focus();
}
