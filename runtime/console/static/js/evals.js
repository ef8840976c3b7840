// Evaluations: start one, watch its progress, see the arms' table and the
// accuracy-against-cost chart, compare runs.
import { get, post } from './api.js';
import { h, clear, card, table, field, select, fmtTime, fmtNum, badge, toast, busy, showError, update } from './ui.js';
import { scatterChart } from './charts.js';

export const title = 'Evaluations';

const pct = (x) => (x === undefined || x === null ? '-' : (100 * x).toFixed(1) + '%');
const secs = (x) => (x === undefined || x === null ? '-' : x < 0.01 ? (1000 * x).toFixed(2) + ' ms' : x.toFixed(3) + ' s');

// parseQuestions reads JSONL questions, naming the line of any error.
function parseQuestions(text) {
  const qs = [];
  const errs = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    try {
      const q = JSON.parse(line);
      if (!q.question || !q.answer) errs.push(`line ${i + 1}: needs "question" and "answer"`);
      else qs.push(q);
    } catch (e) { errs.push(`line ${i + 1}: ${e.message}`); }
  });
  if (errs.length) throw new Error(errs.join('\n'));
  if (!qs.length) throw new Error('no questions');
  return qs;
}

function armsTable(rep) {
  return table(['Arm', 'Questions', 'Exact match', 'F1', 'Contains', 'Retrieval hit@k', 'Latency p50 / p95', 'Tokens in / out per question', 'Cost per question', 'F1 gained per second [95% CI]'],
    rep.arms.map((a) => h('tr', { dataset: { arm: a.arm } }, h('th', { scope: 'row' }, a.arm), h('td', a.questions), h('td', pct(a.exact_match)), h('td', pct(a.f1)), h('td', pct(a.contains)),
      h('td', a.retrieval_hit_at_k !== undefined ? pct(a.retrieval_hit_at_k) : '-'), h('td', `${secs(a.latency_p50_s)} / ${secs(a.latency_p95_s)}`),
      h('td', `${fmtNum(a.prompt_tokens_per_question)} / ${fmtNum(a.completion_tokens_per_question)}`), h('td', secs(a.cost_per_question_s)),
      h('td', a.arm === 'base' ? '-' : withInterval(a)))), { className: 'arms' });
}

// ROI with its 95% bootstrap interval; n.s. when the F1 gain's interval
// includes 0 (no gain shown on these questions).
function withInterval(a) {
  const lo = a.delta_f1_ci_low || 0, hi = a.delta_f1_ci_high || 0;
  const ns = lo <= 0 && hi >= 0 ? ' n.s.' : '';
  return `${fmtNum(a.roi_f1_per_second || 0, 2)} [${fmtNum(a.roi_ci_low || 0, 2)}, ${fmtNum(a.roi_ci_high || 0, 2)}]${ns}`;
}

function armsChart(runs) {
  const points = runs.flatMap((r) => r.report.arms.map((a) => ({ x: a.cost_per_question_s, y: a.f1, label: a.arm, group: runs.length > 1 ? r.id : '' })));
  return scatterChart({ points, xLabel: 'cost per question (device-seconds)', yLabel: 'F1', title: 'Accuracy against cost',
    desc: `F1 against cost per question for ${points.length} arms` });
}

export async function render(root, ctx) {
  const [models, cols] = await Promise.all([get('/v1/models'), get('/v1/collections')]);
  if (!ctx.alive()) return;
  const bases = (models.data || []).filter((m) => m.kind !== 'adapter').map((m) => m.id);
  const adapters = (models.data || []).filter((m) => m.kind === 'adapter');
  const model = select(bases, bases.includes('stories260K') ? 'stories260K' : bases[0], { id: 'ev-model' });
  const coll = select([['', 'none (no RAG arms)'], ...(cols.data || []).map((c) => [c.id, c.id])], '', { id: 'ev-collection' });
  const adapter = h('input#ev-adapter', { list: 'ev-adapters', placeholder: 'none (no fine-tuned arms)', autocomplete: 'off' });
  const adList = h('datalist#ev-adapters', adapters.map((a) => h('option', { value: a.id }, `adapter of ${a.parent}`)));
  const qsFile = h('input#ev-file', { type: 'file', accept: '.jsonl,.json,.txt' });
  const qsText = h('textarea#ev-questions', { rows: 4, placeholder: '{"question": "…", "answer": "…", "aliases": ["…"]}  one per line' });
  qsFile.addEventListener('change', async () => { if (qsFile.files.length) qsText.value = await qsFile.files[0].text(); });
  const topK = h('input#ev-topk', { type: 'number', min: 1, max: 32, value: '4' });
  const maxTok = h('input#ev-max-tokens', { type: 'number', min: 1, value: '32' });
  const conc = h('input#ev-concurrency', { type: 'number', min: 1, value: '4' });
  const err = h('pre.error#ev-error', { role: 'alert', hidden: true });
  const startBtn = h('button.primary#ev-start', { type: 'submit' }, 'Start evaluation');
  const form = h('form', {
    onsubmit: (ev) => {
      ev.preventDefault();
      busy(startBtn, async () => {
        showError(err, null);
        try {
          const body = { model: model.value, questions: parseQuestions(qsText.value), top_k: Number(topK.value), max_tokens: Number(maxTok.value), concurrency: Number(conc.value) };
          if (coll.value) body.collection = coll.value;
          if (adapter.value.trim()) body.adapter = adapter.value.trim();
          const j = await post('/v1/evals', body);
          toast(`Started ${j.id}`);
          selected = j.id;
          await refresh();
        } catch (e) { showError(err, e); }
      });
    },
  }, h('div.grid3', field('Model', model), field('Collection', coll), field('Adapter', adapter, 'an adapter of the model, e.g. ft:…'), adList,
    field('Passages', topK), field('Max tokens per answer', maxTok), field('Concurrency', conc)),
  field('Questions (JSONL)', qsText), field('…or a file', qsFile), h('div.row', startBtn), err);

  const runsBox = h('div');
  const detail = h('div#ev-detail');
  const compareBox = h('div#ev-compare');
  clear(root, h('h1', 'Evaluations'), card('New evaluation', form), card('Runs', runsBox, compareBox), detail);

  let selected = ctx.params.get('id') || '';
  const compare = new Set();
  let running = false;

  async function refresh() {
    const runs = (await get('/v1/evals')).data;
    if (!ctx.alive()) return;
    running = runs.some((r) => r.status === 'running');
    if (!selected && runs.length) selected = runs[0].id;
    update(runsBox, JSON.stringify([selected, runs]), () => table(['Compare', 'Run', 'Model', 'Arms', 'Status', 'Progress', 'Started'], runs.map((r) => {
      const cb = h('input', { type: 'checkbox', checked: compare.has(r.id), disabled: r.status !== 'succeeded', 'aria-label': `Compare ${r.id}`,
        onchange: (ev) => { ev.target.checked ? compare.add(r.id) : compare.delete(r.id); showCompare(runs); } });
      return h('tr', { className: r.id === selected ? 'selected' : '', dataset: { run: r.id, status: r.status } },
        h('td', cb), h('td', h('button.link', { type: 'button', 'aria-pressed': String(r.id === selected), onclick: () => { selected = r.id; refresh(); } }, r.id)),
        h('td', r.model), h('td', r.report ? r.report.arms.map((a) => a.arm).join(', ') : '-'), h('td', badge(r.status)),
        h('td', h('progress', { max: r.total || 1, value: r.answered || 0 }), ` ${r.answered}/${r.total}`), h('td', fmtTime(r.created_at)));
    }), { empty: 'No evaluations yet.' }));
    showCompare(runs);
    const r = runs.find((x) => x.id === selected);
    if (!r) { clear(detail); return; }
    update(detail, JSON.stringify(r), () => h('section.card#ev-run', { dataset: { run: r.id, status: r.status } },
      h('h2', `Run ${r.id} `, badge(r.status)),
      h('p', `${r.model}${r.report && r.report.collection ? ' · collection ' + r.report.collection : ''}${r.report && r.report.adapter ? ' · adapter ' + r.report.adapter : ''} · ${r.answered}/${r.total} answers` +
        (r.report ? ` · ${r.report.duration_s.toFixed(1)} s` : '')),
      r.status === 'running' ? h('progress', { max: r.total || 1, value: r.answered }) : null,
      r.error ? h('p.error', r.error) : null,
      r.report ? [armsTable(r.report), h('div.chart-box#ev-chart', armsChart([r]))] : null));
  }

  function showCompare(runs) {
    const chosen = runs.filter((r) => compare.has(r.id) && r.report);
    if (chosen.length < 2) {
      clear(compareBox, h('p.muted', 'Tick two or more finished runs to compare them.'));
      return;
    }
    const arms = [...new Set(chosen.flatMap((r) => r.report.arms.map((a) => a.arm)))];
    const rows = arms.map((arm) => h('tr', h('th', { scope: 'row' }, arm), chosen.map((r) => {
      const a = r.report.arms.find((x) => x.arm === arm);
      return h('td', a ? `F1 ${pct(a.f1)} · EM ${pct(a.exact_match)} · ${secs(a.cost_per_question_s)}/q` : '-');
    })));
    clear(compareBox, h('h3', 'Comparison'), table(['Arm', ...chosen.map((r) => `${r.id} (${r.model})`)], rows, { className: 'compare' }),
      h('div.chart-box', armsChart(chosen)));
  }

  await refresh();
  let idle = 0;
  ctx.every(async () => {
    if (!running && ++idle % 5) return;
    await refresh();
  }, 1000);
  ctx.ready();
}
