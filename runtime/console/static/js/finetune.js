// Fine-tuning: upload a dataset, start a job, watch its loss curves,
// cancel it, download the adapter, and serve it in one click.
import { get, post, upload, download } from './api.js';
import { h, clear, card, table, field, select, fmtTime, badge, toast, busy, showError, update } from './ui.js';
import { lineChart } from './charts.js';

export const title = 'Fine-tuning';

const FINAL = ['succeeded', 'failed', 'cancelled'];

// allEvents pages through a job's events (newest first) until it reaches
// one already known; it returns the new ones.
async function newEvents(id, known) {
  const out = [];
  let after = '';
  for (let page = 0; page < 50; page++) {
    const r = await get(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}/events?limit=100${after ? '&after=' + encodeURIComponent(after) : ''}`);
    let stop = false;
    for (const e of r.data) {
      if (known.has(e.id)) { stop = true; break; }
      out.push(e);
    }
    if (stop || !r.has_more || !r.data.length) break;
    after = r.data[r.data.length - 1].id;
  }
  return out;
}

export async function render(root, ctx) {
  const models = await get('/v1/models');
  if (!ctx.alive()) return;
  const bases = (models.data || []).filter((m) => m.kind !== 'adapter').map((m) => m.id);

  // Upload.
  const fileIn = h('input#ft-file', { type: 'file', accept: '.jsonl,.json,.txt', required: true });
  const upErr = h('pre.error#ft-upload-error', { role: 'alert', hidden: true });
  const upBtn = h('button.primary#ft-upload', { type: 'submit' }, 'Upload');
  const upForm = h('form.row', {
    onsubmit: (ev) => {
      ev.preventDefault();
      if (!fileIn.files.length) return;
      busy(upBtn, async () => {
        showError(upErr, null);
        const fd = new FormData();
        fd.append('purpose', 'fine-tune');
        fd.append('file', fileIn.files[0]);
        try {
          const f = await upload('/v1/files', fd);
          toast(`Uploaded ${f.filename} (${f.id})`);
          fileIn.value = '';
          await loadFiles(f.id);
        } catch (e) { showError(upErr, e); }
      });
    },
  }, field('Dataset (JSONL: messages, prompt/completion, instruction/output or text)', fileIn), upBtn);

  // Start a job.
  const base = select(bases, bases.includes('stories260K') ? 'stories260K' : bases[0], { id: 'ft-model' });
  const train = h('select#ft-training');
  const valid = h('select#ft-validation');
  const epochs = h('input#ft-epochs', { type: 'number', min: 1, max: 1000, value: '3' });
  const lrm = h('input#ft-lr', { type: 'number', step: 'any', min: 0, value: '1' });
  const batch = h('input#ft-batch', { type: 'number', min: 1, value: '1' });
  const suffix = h('input#ft-suffix', { pattern: '[A-Za-z0-9._\\-]{1,64}', placeholder: 'optional: names the model ft:BASE:SUFFIX' });
  const jobErr = h('p.error', { role: 'alert', hidden: true });
  const startBtn = h('button.primary#ft-start', { type: 'submit' }, 'Start fine-tuning');
  const jobForm = h('form', {
    onsubmit: (ev) => {
      ev.preventDefault();
      busy(startBtn, async () => {
        showError(jobErr, null);
        try {
          const body = { model: base.value, training_file: train.value,
            hyperparameters: { n_epochs: Number(epochs.value), learning_rate_multiplier: Number(lrm.value), batch_size: Number(batch.value) } };
          if (valid.value) body.validation_file = valid.value;
          if (suffix.value.trim()) body.suffix = suffix.value.trim();
          const j = await post('/v1/fine_tuning/jobs', body);
          toast(`Started ${j.id}`);
          selected = j.id;
          await refresh();
        } catch (e) { showError(jobErr, e); }
      });
    },
  }, h('div.grid3', field('Base model', base), field('Training file', train), field('Validation file', valid),
    field('Epochs', epochs), field('Learning-rate multiplier (× 2e-4)', lrm), field('Batch size', batch), field('Suffix', suffix)),
  h('div.row', startBtn), jobErr);

  const jobsBox = h('div');
  const detail = h('div#ft-detail');
  clear(root, h('h1', 'Fine-tuning'), card('Upload a dataset', upForm, upErr), card('New job', jobForm), card('Jobs', jobsBox), detail);

  async function loadFiles(pick) {
    const fs = await get('/v1/files');
    const opts = fs.data.filter((f) => f.purpose === 'fine-tune').sort((a, b) => b.created_at - a.created_at)
      .map((f) => [f.id, `${f.filename} (${f.id}, ${f.bytes} B)`]);
    clear(train, opts.map(([v, t]) => h('option', { value: v, selected: v === pick }, t)));
    clear(valid, h('option', { value: '' }, 'none'), opts.map(([v, t]) => h('option', { value: v }, t)));
    startBtn.disabled = !opts.length;
  }

  let selected = ctx.params.get('job') || '';
  let active = false;
  const events = new Map(); // job id -> Map(event id -> event)

  async function refresh() {
    const jobs = (await get('/v1/fine_tuning/jobs?limit=50')).data;
    if (!ctx.alive()) return;
    if (!selected && jobs.length) selected = jobs[0].id;
    active = jobs.some((x) => !FINAL.includes(x.status));
    update(jobsBox, JSON.stringify([selected, jobs]), () => table(['Job', 'Model', 'Status', 'Created', 'Fine-tuned model'], jobs.map((j) => {
      const open = h('button.link', { type: 'button', 'aria-pressed': String(j.id === selected), onclick: () => { selected = j.id; refresh(); } }, j.id);
      return h('tr', { className: j.id === selected ? 'selected' : '', dataset: { job: j.id } },
        h('td', open), h('td', j.model), h('td', badge(j.status)), h('td', fmtTime(j.created_at)), h('td', j.fine_tuned_model || '-'));
    }), { empty: 'No jobs yet.' }));
    const j = jobs.find((x) => x.id === selected);
    if (j) await showJob(j);
    else clear(detail);
  }

  async function showJob(j) {
    if (!events.has(j.id)) events.set(j.id, new Map());
    const known = events.get(j.id);
    for (const e of await newEvents(j.id, known)) known.set(e.id, e);
    if (!ctx.alive() || selected !== j.id) return;
    const evs = [...known.values()].sort((a, b) => a.created_at - b.created_at || (a.data?.step || 0) - (b.data?.step || 0));
    const metrics = evs.filter((e) => e.type === 'metrics' && e.data);
    const trainPts = metrics.map((e) => [e.data.step, e.data.train_loss]);
    const validPts = metrics.filter((e) => e.data.valid_loss !== undefined).map((e) => [e.data.step, e.data.valid_loss]);
    const last = metrics[metrics.length - 1];
    const progress = last ? h('progress', { max: last.data.total_steps, value: last.data.step }) : null;
    const series = [{ name: 'training loss', points: trainPts }];
    if (validPts.length) series.push({ name: 'validation loss', points: validPts });
    const chart = trainPts.length ? lineChart({ series, xLabel: 'step', yLabel: 'loss', title: 'Loss', desc: `Loss over ${trainPts.length} steps` })
      : h('p.muted', 'The loss curve appears with the first step.');
    const actions = h('div.row');
    if (!FINAL.includes(j.status)) {
      actions.append(h('button#ft-cancel', { type: 'button', onclick: (ev) => busy(ev.currentTarget, async () => {
        try { await post(`/v1/fine_tuning/jobs/${j.id}/cancel`); toast(`Cancelled ${j.id}`); } catch (e) { toast(e.message, true); }
        await refresh();
      }) }, 'Cancel job'));
    }
    if (j.status === 'succeeded') {
      actions.append(
        h('button#ft-download-gguf', { type: 'button', onclick: (ev) => busy(ev.currentTarget, () => download(`/v1/fine_tuning/jobs/${j.id}/adapter?format=gguf`, j.id + '.gguf').catch((e) => toast(e.message, true))) }, 'Download GGUF'),
        h('button#ft-download-peft', { type: 'button', onclick: (ev) => busy(ev.currentTarget, () => download(`/v1/fine_tuning/jobs/${j.id}/adapter?format=peft`, j.id + '-peft.zip').catch((e) => toast(e.message, true))) }, 'Download PEFT'),
        h('button.primary#ft-serve', { type: 'button', onclick: (ev) => busy(ev.currentTarget, async () => {
          try {
            await post('/v1/system/load', { model: j.fine_tuned_model });
            ctx.go(`#/chat?model=${encodeURIComponent(j.fine_tuned_model)}`);
          } catch (e) { toast(e.message, true); }
        }) }, `Serve and chat with ${j.fine_tuned_model}`));
    }
    update(detail, JSON.stringify([j, evs.length]), () => h('section.card#ft-job', { dataset: { job: j.id, status: j.status } },
      h('h2', `Job ${j.id} `, badge(j.status)),
      h('p', `${j.model} → ${j.fine_tuned_model || '-'} · epochs ${j.hyperparameters.n_epochs}, batch ${j.hyperparameters.batch_size}, learning-rate ×${j.hyperparameters.learning_rate_multiplier}` +
        (j.trained_tokens ? ` · ${j.trained_tokens} tokens trained` : '') + (last ? ` · step ${last.data.step}/${last.data.total_steps}` : '')),
      progress, j.error ? h('p.error', `${j.error.code}: ${j.error.message}`) : null,
      h('div.chart-box', chart), actions,
      h('details', h('summary', `Events (${evs.length})`),
        h('ol.events', evs.slice(-200).reverse().map((e) => h('li', { className: e.level }, `${fmtTime(e.created_at)} ${e.message}`))))));
  }

  await loadFiles();
  await refresh();
  // Every second while a job is queued or running, else every 5 s.
  let idle = 0;
  ctx.every(async () => {
    if (!active && ++idle % 5) return;
    await refresh();
  }, 1000);
  ctx.ready();
}
