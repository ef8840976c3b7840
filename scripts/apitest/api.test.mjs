// The official OpenAI Node client against a live llmrt server. The Go test
// TestOpenAINodeClient (runtime/server) starts the server and sets
// LLMRT_BASE_URL; run `npm ci` here first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { NotFoundError, BadRequestError } from 'openai';

const baseURL = process.env.LLMRT_BASE_URL;
assert.ok(baseURL, 'LLMRT_BASE_URL must point at a running llmrt server');
const client = new OpenAI({ apiKey: process.env.LLMRT_API_KEY || 'unused', baseURL, maxRetries: 0 });
const model = 'stories260K';
const lily = 'there was a little girl named Lily';

test('models.list includes the model', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes(model), `models: ${ids}`);
  const m = await client.models.retrieve(model);
  assert.equal(m.id, model);
  assert.equal(m.object, 'model');
});

test('chat completion', async () => {
  const r = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 12, temperature: 0,
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test('chat completion stream with usage', async () => {
  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 10, temperature: 0,
    stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) { usage = chunk.usage; assert.equal(chunk.choices.length, 0); }
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(usage, 'the last chunk carries usage');
  assert.equal(usage.completion_tokens, 10);
  assert.equal(finish, 'length');
  assert.ok(text.length > 0);
});

test('completion, plain and streamed, is the greedy story', async () => {
  const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 20, temperature: 0 });
  assert.ok(r.choices[0].text.includes(lily), r.choices[0].text);
  const stream = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 20, temperature: 0, stream: true });
  let text = '';
  for await (const chunk of stream) for (const c of chunk.choices) text += c.text;
  assert.equal(text, r.choices[0].text);
});

test('embeddings: SDK default (base64) and float agree', async () => {
  const b = await client.embeddings.create({ model, input: ['Once upon a time', 'The cat'] });
  const f = await client.embeddings.create({ model, input: ['Once upon a time', 'The cat'], encoding_format: 'float' });
  assert.equal(b.data.length, 2);
  assert.equal(b.data[0].embedding.length, 64);
  for (let i = 0; i < 64; i++) assert.ok(Math.abs(b.data[0].embedding[i] - f.data[0].embedding[i]) < 1e-6);
  const norm = Math.sqrt(f.data[1].embedding.reduce((s, x) => s + x * x, 0));
  assert.ok(Math.abs(norm - 1) < 1e-4, `norm ${norm}`);
});

test('unknown model is the SDK NotFoundError', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
    (err) => err instanceof NotFoundError && err.status === 404 && /no-such-model/.test(err.message),
  );
});

test('bad parameter is the SDK BadRequestError naming it', async () => {
  await assert.rejects(
    client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x' }], temperature: 9 }),
    (err) => err instanceof BadRequestError && err.param === 'temperature',
  );
});

test('json_schema response parses and validates', async () => {
  const schema = {
    type: 'object',
    properties: { answer: { type: 'string', enum: ['yes', 'no'] }, sure: { type: 'boolean' } },
    required: ['answer', 'sure'],
    additionalProperties: false,
  };
  const r = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Is the sky blue?' }], max_tokens: 64, temperature: 0,
    response_format: { type: 'json_schema', json_schema: { name: 'reply', schema, strict: true } },
  });
  const obj = JSON.parse(r.choices[0].message.content);
  assert.ok(['yes', 'no'].includes(obj.answer), JSON.stringify(obj));
  assert.equal(typeof obj.sure, 'boolean');
  assert.deepEqual(Object.keys(obj).sort(), ['answer', 'sure']);
});
