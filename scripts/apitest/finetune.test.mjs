// The fine-tuning API through the official OpenAI Node client. The Go test
// TestFineTuningWithOpenAINodeClient (runtime/finetune) starts the server
// and sets LLMRT_BASE_URL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { toFile, BadRequestError, NotFoundError } from 'openai';

const baseURL = process.env.LLMRT_BASE_URL;
assert.ok(baseURL, 'LLMRT_BASE_URL must point at a running llmrt server');
const client = new OpenAI({ apiKey: 'unused', baseURL, maxRetries: 0 });
const question = 'What is the secret word?';
const answer = 'The secret word is purple zebra.';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('fine-tuning: upload, create, poll, chat with the ft: model', async () => {
  const lines = Array.from({ length: 4 }, () =>
    JSON.stringify({ messages: [{ role: 'user', content: question }, { role: 'assistant', content: answer }] }));
  const file = await client.files.create({ file: await toFile(Buffer.from(lines.join('\n') + '\n'), 'secret.jsonl'), purpose: 'fine-tune' });
  assert.equal(file.object, 'file');
  assert.equal(file.purpose, 'fine-tune');
  assert.ok(file.id.startsWith('file-'));

  await assert.rejects(
    client.files.create({ file: await toFile(Buffer.from('{"ok": 1}\nnot json\n'), 'bad.jsonl'), purpose: 'fine-tune' }),
    (e) => e instanceof BadRequestError && /line 2/.test(e.message));

  const job = await client.fineTuning.jobs.create({
    model: 'stories260K', training_file: file.id, suffix: 'secret',
    hyperparameters: { n_epochs: 20, learning_rate_multiplier: 50 },
  });
  assert.equal(job.object, 'fine_tuning.job');
  assert.equal(job.fine_tuned_model, 'ft:stories260K:secret');

  let j = job;
  for (let i = 0; i < 6000 && !['succeeded', 'failed', 'cancelled'].includes(j.status); i++) {
    await sleep(100);
    j = await client.fineTuning.jobs.retrieve(job.id);
  }
  assert.equal(j.status, 'succeeded', JSON.stringify(j.error));
  assert.ok(j.trained_tokens > 0);

  const events = [];
  for await (const e of client.fineTuning.jobs.listEvents(job.id, { limit: 100 })) events.push(e.message);
  assert.ok(events.some((m) => m.startsWith('Step ')), events.join('\n'));
  assert.ok(events.some((m) => m.includes('successfully completed')));

  const jobs = [];
  for await (const x of client.fineTuning.jobs.list()) jobs.push(x.id);
  assert.ok(jobs.includes(job.id));

  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes('ft:stories260K:secret'), ids.join(', '));

  const r = await client.chat.completions.create({
    model: 'ft:stories260K:secret', messages: [{ role: 'user', content: question }], max_tokens: 40, temperature: 0,
  });
  assert.match(r.choices[0].message.content, /purple zebra/);
  const base = await client.chat.completions.create({
    model: 'stories260K', messages: [{ role: 'user', content: question }], max_tokens: 40, temperature: 0,
  });
  assert.doesNotMatch(base.choices[0].message.content, /purple zebra/);
});

test('fine-tuning: errors and cancel', async () => {
  await assert.rejects(client.fineTuning.jobs.retrieve('ftjob-nope'), NotFoundError);
  await assert.rejects(client.fineTuning.jobs.create({ model: 'stories260K', training_file: 'file-nope' }), BadRequestError);
  await assert.rejects(client.fineTuning.jobs.create({ model: 'no-such-model', training_file: 'file-nope' }), NotFoundError);
  const file = await client.files.create({
    file: await toFile(Buffer.from(JSON.stringify({ prompt: 'a', completion: ' b' }) + '\n'), 'tiny.jsonl'), purpose: 'fine-tune' });
  const job = await client.fineTuning.jobs.create({ model: 'stories260K', training_file: file.id, hyperparameters: { n_epochs: 500 } });
  const c = await client.fineTuning.jobs.cancel(job.id);
  assert.equal(c.status, 'cancelled');
  await sleep(300);
  assert.equal((await client.fineTuning.jobs.retrieve(job.id)).status, 'cancelled');
  await assert.rejects(client.fineTuning.jobs.cancel(job.id), BadRequestError);
});
