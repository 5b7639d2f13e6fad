// The JS SDK against the live stack (fake upstreams, real vault, gateway and REST bridge).
// Driven by tests/sdk/test_js_sdk.py, which starts the stack and passes in the environment:
//   NATIVE1API_BASE_URL    the bridge, http://127.0.0.1:PORT
//   NATIVE1API_DOWN_URL    a bridge whose gateway is down (503)
//   NATIVE1API_TOKEN       a valid Firebase ID token (user A: chat, models, errors)
//   NATIVE1API_TOKEN_2     another user's token (user B: vault and BYOK)
//   NATIVE1API_OPENROUTER_KEY  a key the fake OpenRouter accepts
//   NATIVE1API_PROMPTS     JSON {name: {prompt, reply}}: the prompts to send, the fake's replies
// Without NATIVE1API_BASE_URL (e.g. a plain `node --test tests/sdk/js/`) these tests are skipped.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { inspect } from 'node:util';

import {
  APIUserAbortError,
  AuthenticationError,
  BadRequestError,
  InternalServerError,
  Native1API,
  Native1APIError,
  NotFoundError,
  RateLimitError,
  StreamError,
} from '../../../sdk/js/native1api.mjs';

const env = process.env;
const BASE_URL = env.NATIVE1API_BASE_URL;
const skip = BASE_URL ? false : 'NATIVE1API_BASE_URL not set: run through tests/sdk/test_js_sdk.py';
const TOKEN = env.NATIVE1API_TOKEN ?? '';
const TOKEN_2 = env.NATIVE1API_TOKEN_2 ?? '';
const PROMPTS = JSON.parse(env.NATIVE1API_PROMPTS ?? '{}');
const LLAMA = '@cf/meta/llama-3.2-3b-instruct';

const user = (content) => [{ role: 'user', content }];
const client = (options = {}) => new Native1API({ baseUrl: BASE_URL, token: TOKEN, ...options });

function textAndFinishes(chunks) {
  let text = '';
  const finishes = [];
  for (const chunk of chunks) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    for (const choice of chunk.choices) {
      text += choice.delta?.content ?? '';
      if (choice.finish_reason !== null && choice.finish_reason !== undefined) finishes.push(choice.finish_reason);
    }
  }
  return { text, finishes };
}

async function collect(stream, into = []) {
  for await (const chunk of stream) into.push(chunk);
  return into;
}

function assertSecretFree(err, ...secrets) {
  const texts = [err.message, String(err), inspect(err, { depth: 5 }), JSON.stringify(err.body ?? null)];
  for (const secret of secrets) {
    assert.ok(secret);
    for (const text of texts) assert.ok(!text.includes(secret), `secret found in: ${text}`);
  }
}

describe('live: chat completions', { skip }, () => {
  test('create returns the chat.completion object', async () => {
    const { prompt, reply } = PROMPTS.hello;
    const completion = await client().chat.completions.create({ model: LLAMA, messages: user(prompt), max_tokens: 64 });
    assert.equal(completion.object, 'chat.completion');
    assert.equal(completion.model, LLAMA);
    assert.match(completion.id, /^chatcmpl-/);
    assert.equal(completion.choices[0].message.content, reply);
    assert.equal(completion.choices[0].finish_reason, 'stop');
    assert.equal(completion.usage.completion_tokens, 6);
  });

  test('stream yields chunks until [DONE], exactly one finish chunk', async () => {
    const { prompt, reply } = PROMPTS.stream;
    const stream = await client().chat.completions.create({
      model: LLAMA,
      messages: user(prompt),
      stream: true,
      stream_options: { include_usage: true },
    });
    assert.equal(stream.provider, 'workers-ai');
    assert.ok(stream.requestId);
    const chunks = await collect(stream);
    assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
    const { text, finishes } = textAndFinishes(chunks);
    assert.equal(text, reply);
    assert.deepEqual(finishes, ['stop']);
    assert.deepEqual(chunks.at(-1).choices, []);
    assert.equal(chunks.at(-1).usage.completion_tokens, 6);
  });

  test('getToken is called for every request', async () => {
    let calls = 0;
    const api = new Native1API({
      baseUrl: BASE_URL,
      getToken: async () => {
        calls += 1;
        return TOKEN;
      },
    });
    await api.models.list();
    const stream = await api.chat.completions.create({ model: LLAMA, messages: user(PROMPTS.hello.prompt), stream: true });
    assert.equal(textAndFinishes(await collect(stream)).text, PROMPTS.hello.reply);
    assert.equal(calls, 2);
  });

  test('a mid-stream error throws StreamError after the chunks that arrived', async () => {
    const { prompt, reply } = PROMPTS.cut;
    const stream = await client().chat.completions.create({ model: LLAMA, messages: user(prompt), stream: true });
    const received = [];
    await assert.rejects(collect(stream, received), (err) => {
      assert.ok(err instanceof StreamError);
      assert.equal(err.status, null);
      assert.equal(err.code, 'upstream_stream_interrupted');
      assert.equal(err.type, 'server_error');
      assert.equal(err.requestId, stream.requestId);
      assertSecretFree(err, TOKEN);
      return true;
    });
    const { text, finishes } = textAndFinishes(received);
    assert.ok(text && reply.startsWith(text));
    assert.deepEqual(finishes, []);
  });

  test('aborting mid-stream throws APIUserAbortError and closes the connection', async () => {
    const { prompt } = PROMPTS.abort;
    const controller = new AbortController();
    const stream = await client().chat.completions.create(
      { model: LLAMA, messages: user(prompt), stream: true },
      { signal: controller.signal },
    );
    let contentChunks = 0;
    await assert.rejects(
      async () => {
        for await (const chunk of stream) {
          if (chunk.choices[0]?.delta?.content) contentChunks += 1;
          if (contentChunks === 2) controller.abort();
        }
      },
      (err) => err instanceof APIUserAbortError && err instanceof Native1APIError,
    );
    assert.equal(contentChunks, 2);
    // test_js_sdk.py checks that the fake upstream saw the disconnect.
  });
});

describe('live: models', { skip }, () => {
  test('list returns the Workers AI catalog', async () => {
    const models = await client().models.list();
    assert.ok(models.some((m) => m.id === LLAMA));
    assert.ok(models.every((m) => m.object === 'model' && m.owned_by));
  });
});

describe('live: vault', { skip }, () => {
  test('put, exists, BYOK stream through OpenRouter, delete', async () => {
    const api = client({ token: TOKEN_2 });
    assert.deepEqual(await api.vault.exists(), { exists: false });
    assert.deepEqual(await api.vault.put(env.NATIVE1API_OPENROUTER_KEY), { exists: true, provider: 'openrouter' });
    assert.deepEqual(await api.vault.exists(), { exists: true, provider: 'openrouter' });

    const { prompt, reply } = PROMPTS.byok;
    const stream = await api.chat.completions.create({ model: LLAMA, messages: user(prompt), stream: true });
    assert.equal(stream.provider, 'openrouter');
    const { text, finishes } = textAndFinishes(await collect(stream));
    assert.equal(text, reply);
    assert.deepEqual(finishes, ['stop']);

    assert.deepEqual(await api.vault.delete(), { exists: false });
    assert.deepEqual(await api.vault.delete(), { exists: false });
    assert.deepEqual(await api.vault.exists(), { exists: false });
  });

  test('a key without a known prefix or provider is a BadRequestError without the key', async () => {
    const key = 'plainkey-without-a-known-prefix-js-0123';
    await assert.rejects(client({ token: TOKEN_2 }).vault.put(key), (err) => {
      assert.ok(err instanceof BadRequestError);
      assert.equal(err.status, 400);
      assert.equal(err.param, 'provider');
      assertSecretFree(err, key, TOKEN_2);
      return true;
    });
  });
});

describe('live: errors', { skip }, () => {
  const cases = [
    { name: '400 temperature', Cls: BadRequestError, status: 400, code: 'decimal_above_max_value', param: 'temperature', extra: { temperature: 3 } },
    { name: '401 bad token', Cls: AuthenticationError, status: 401, code: 'invalid_api_key', token: 'not-a-firebase-token-js' },
    { name: '404 unknown model', Cls: NotFoundError, status: 404, code: 'model_not_found', param: 'model', model: 'openai/gpt-4o' },
    { name: '429 rate limited', Cls: RateLimitError, status: 429, code: 'rate_limit_exceeded', prompt: 'slow [[fake:status=429,retry_after=1]]' },
    { name: '502 upstream failed', Cls: InternalServerError, status: 502, code: 'upstream_error', prompt: 'broken [[fake:status=500]]' },
    { name: '503 backend down', Cls: InternalServerError, status: 503, code: 'service_unavailable', baseUrl: env.NATIVE1API_DOWN_URL },
  ];
  for (const c of cases) {
    for (const stream of [false, true]) {
      test(`${c.name}${stream ? ' (stream)' : ''}`, async () => {
        const token = c.token ?? TOKEN;
        const api = client({ token, baseUrl: c.baseUrl ?? BASE_URL });
        await assert.rejects(
          api.chat.completions.create({
            model: c.model ?? LLAMA,
            messages: user(c.prompt ?? 'hello errors'),
            stream,
            ...(c.extra ?? {}),
          }),
          (err) => {
            assert.equal(err.constructor, c.Cls);
            assert.ok(err instanceof Native1APIError);
            assert.equal(err.status, c.status);
            assert.equal(err.code, c.code);
            assert.equal(err.param, c.param ?? null);
            assert.ok(err.type);
            assert.ok(err.requestId && err.requestId.length >= 16);
            if (c.status === 429) assert.equal(err.retryAfter, 1);
            assertSecretFree(err, token);
            return true;
          },
        );
      });
    }
  }
});
