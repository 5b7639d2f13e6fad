// The JS SDK against a recorded-response test double (an injected `fetch`): SSE framing variants,
// odd bodies, retries, aborts. Runs without the stack: `node --test tests/sdk/js/`.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { inspect } from 'node:util';

import {
  APIConnectionError,
  APIConnectionTimeoutError,
  APIUserAbortError,
  AuthenticationError,
  BadRequestError,
  InternalServerError,
  Native1API,
  Native1APIError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
  StreamError,
  appCheckToken,
  firebaseIdToken,
} from '../../../sdk/js/native1api.mjs';

const BASE = 'http://gateway.test';
const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.unit-test-token.c2lnbmF0dXJl';
const MODEL = '@cf/meta/llama-3.2-3b-instruct';
const MESSAGES = [{ role: 'user', content: 'hi' }];

const chunk = (delta, finish = null) => ({
  id: 'chatcmpl-9f2c',
  object: 'chat.completion.chunk',
  created: 1767225600,
  model: MODEL,
  choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  usage: null,
});
// A recorded OpenAI stream (wire-formats §1.4); multi-byte content on purpose.
const CHUNKS = [
  chunk({ role: 'assistant', content: '' }),
  chunk({ content: 'Héllo ✓' }),
  chunk({ content: ' 🎉\nbye' }),
  chunk({}, 'stop'),
];
const COMPLETION = {
  id: 'chatcmpl-1',
  object: 'chat.completion',
  created: 1767225600,
  model: MODEL,
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello!' }, logprobs: null, finish_reason: 'stop' }],
  usage: { prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 },
};

function frames({ eol = '\n', ping = false, pretty = false, extras = false } = {}) {
  let out = ping ? `: ping${eol}${eol}` : '';
  for (const c of CHUNKS) {
    if (extras) out += `event: message${eol}id: 7${eol}retry: 1000${eol}`;
    if (pretty) out += JSON.stringify(c, null, 1).split('\n').map((line) => `data: ${line}${eol}`).join('');
    else out += `data: ${JSON.stringify(c)}${eol}`;
    out += eol;
    if (ping) out += `: keep-alive${eol}`;
  }
  return new TextEncoder().encode(out + `data: [DONE]${eol}${eol}`);
}

const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};
const bytes = (text) => new TextEncoder().encode(text);

/** A streamed body: the pieces, optionally slowly, then end / error; honours the fetch signal. */
function body(pieces, { delayMs = 0, error = null, signal = undefined } = {}) {
  let i = 0;
  return new ReadableStream({
    start(controller) {
      signal?.addEventListener('abort', () => {
        try {
          controller.error(signal.reason);
        } catch {}
      });
    },
    async pull(controller) {
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      if (signal?.aborted) return;
      if (i < pieces.length) controller.enqueue(pieces[i++]);
      else if (error) controller.error(error);
      else controller.close();
    },
  });
}

function split(data, size) {
  if (!size) return [data];
  const pieces = [];
  for (let i = 0; i < data.length; i += size) pieces.push(data.slice(i, i + size));
  return pieces;
}

const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'x-request-id': 'rid-stream',
  'x-native1api-provider': 'workers-ai',
};

/** A fake fetch answering from a script of functions (init) => Response; keeps the requests. */
function script(...answers) {
  const requests = [];
  const fetch = async (url, init) => {
    requests.push({ url, ...init, headers: new Headers(init.headers) });
    const answer = answers.length > 1 ? answers.shift() : answers[0];
    if (init.signal?.aborted) throw init.signal.reason;
    return answer(init);
  };
  return { fetch, requests };
}

const sse = (data, opts = {}) => (init) =>
  new Response(body(split(data, opts.split), { ...opts, signal: init.signal }), { status: 200, headers: SSE_HEADERS });
const json = (status, value, headers = {}) => () =>
  new Response(JSON.stringify(value), { status, headers: { 'content-type': 'application/json', ...headers } });
const apiError = (status, code, headers = {}, extra = {}) =>
  json(status, { error: { message: `failed with ${status}`, type: 'server_error', param: null, code, ...extra } }, {
    'x-request-id': `rid-${status}`,
    ...headers,
  });

const client = (fetch, options = {}) => new Native1API({ baseUrl: BASE, token: TOKEN, fetch, ...options });

async function collect(stream) {
  const out = [];
  for await (const c of stream) out.push(c);
  return out;
}

describe('SSE framing', () => {
  const framings = {
    lf: { data: frames() },
    crlf: { data: frames({ eol: '\r\n' }) },
    cr: { data: frames({ eol: '\r' }) },
    'pings and comments': { data: frames({ ping: true }) },
    'multi-line data': { data: frames({ pretty: true }) },
    'event/id/retry fields': { data: frames({ extras: true }) },
    bom: { data: concat(new Uint8Array([0xef, 0xbb, 0xbf]), frames()) },
    'no space after colon': { data: bytes(new TextDecoder().decode(frames()).replaceAll('data: ', 'data:')) },
    'lf byte by byte': { data: frames(), split: 1 },
    'crlf byte by byte': { data: frames({ eol: '\r\n', ping: true }), split: 1 },
    'cr split in 3s': { data: frames({ eol: '\r', pretty: true }), split: 3 },
    'after [DONE] ignored': { data: concat(frames(), bytes('data: {"error": {"message": "late"}}\n\n')) },
  };
  for (const [name, { data, split: size }] of Object.entries(framings)) {
    test(name, async () => {
      const { fetch } = script(sse(data, { split: size }));
      const stream = await client(fetch).chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true });
      assert.equal(stream.requestId, 'rid-stream');
      assert.equal(stream.provider, 'workers-ai');
      assert.deepEqual(await collect(stream), CHUNKS);
    });
  }
});

describe('streams', () => {
  test('request shape', async () => {
    const { fetch, requests } = script(sse(frames()));
    const stream = await client(fetch).chat.completions.create(
      { model: MODEL, messages: MESSAGES, stream: true, stream_options: { include_usage: true }, temperature: 0.5 },
      { headers: { 'x-request-id': 'mine', Authorization: 'Bearer not-this' } },
    );
    await collect(stream);
    const [request] = requests;
    assert.equal(request.url, `${BASE}/v1/chat/completions`);
    assert.equal(request.method, 'POST');
    assert.equal(request.headers.get('authorization'), `Bearer ${TOKEN}`);
    assert.equal(request.headers.get('accept'), 'text/event-stream');
    assert.equal(request.headers.get('content-type'), 'application/json');
    assert.equal(request.headers.get('x-request-id'), 'mine');
    assert.deepEqual(JSON.parse(request.body), {
      model: MODEL,
      messages: MESSAGES,
      stream: true,
      stream_options: { include_usage: true },
      temperature: 0.5,
    });
  });

  test('an error frame throws StreamError after the chunks before it', async () => {
    const data = bytes(
      `data: ${JSON.stringify(CHUNKS[0])}\n\ndata: ${JSON.stringify(CHUNKS[1])}\n\n` +
        'data: {"error": {"message": "upstream went away", "type": "server_error", "param": null, "code": "upstream_stream_interrupted"}}\n\n',
    );
    const { fetch } = script(sse(data));
    const stream = await client(fetch).chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true });
    const received = [];
    await assert.rejects(
      async () => {
        for await (const c of stream) received.push(c);
      },
      (err) => {
        assert.ok(err instanceof StreamError);
        assert.ok(err instanceof Native1APIError);
        assert.equal(err.message, 'upstream went away');
        assert.equal(err.code, 'upstream_stream_interrupted');
        assert.equal(err.type, 'server_error');
        assert.equal(err.status, null);
        assert.equal(err.requestId, 'rid-stream');
        return true;
      },
    );
    assert.deepEqual(received, CHUNKS.slice(0, 2));
  });

  for (const [name, data, code] of [
    ['no [DONE]', bytes(`data: ${JSON.stringify(CHUNKS[0])}\n\n`), 'stream_truncated'],
    ['unterminated [DONE]', bytes(`data: ${JSON.stringify(CHUNKS[0])}\n\ndata: [DONE]`), 'stream_truncated'],
    ['not JSON', bytes('data: not json\n\n'), 'invalid_stream_frame'],
    ['not an object', bytes('data: [1, 2]\n\n'), 'invalid_stream_frame'],
    ['OpenRouter error chunk', bytes('data: {"id":"g","error":{"code":502,"message":"Provider disconnected"},"choices":[]}\n\n'), '502'],
  ]) {
    test(`broken stream: ${name}`, async () => {
      const { fetch } = script(sse(data));
      const stream = await client(fetch).chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true });
      await assert.rejects(collect(stream), (err) => err instanceof StreamError && err.code === code);
    });
  }

  test('a connection lost mid-stream is StreamError', async () => {
    const { fetch } = script(sse(bytes(`data: ${JSON.stringify(CHUNKS[0])}\n\n`), { error: new TypeError('terminated') }));
    const stream = await client(fetch).chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true });
    await assert.rejects(collect(stream), (err) => err instanceof StreamError && err.code === 'stream_interrupted');
  });

  test('aborting with a signal mid-stream throws APIUserAbortError', async () => {
    const { fetch } = script(sse(frames(), { split: 40, delayMs: 5 }));
    const controller = new AbortController();
    const stream = await client(fetch).chat.completions.create(
      { model: MODEL, messages: MESSAGES, stream: true },
      { signal: controller.signal },
    );
    const received = [];
    await assert.rejects(
      async () => {
        for await (const c of stream) {
          received.push(c);
          controller.abort();
        }
      },
      (err) => err instanceof APIUserAbortError,
    );
    assert.equal(received.length, 1);
  });

  test('stream.abort() and break stop the stream', async () => {
    const { fetch } = script(sse(frames(), { split: 40, delayMs: 5 }));
    const api = client(fetch);
    const stream = await api.chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true });
    const iterator = stream[Symbol.asyncIterator]();
    assert.deepEqual((await iterator.next()).value, CHUNKS[0]);
    stream.abort();
    await assert.rejects(iterator.next(), APIUserAbortError);

    const again = await api.chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true });
    for await (const c of again) {
      assert.deepEqual(c, CHUNKS[0]);
      break;
    }
    assert.ok(again.controller.signal.aborted); // leaving the loop closed the connection
    assert.throws(() => again[Symbol.asyncIterator](), Native1APIError); // iterated once only
  });

  test('an already aborted signal never sends', async () => {
    const { fetch, requests } = script(sse(frames()));
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(
      client(fetch).chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true }, { signal: controller.signal }),
      APIUserAbortError,
    );
    assert.equal(requests.length, 0);
  });

  test('a JSON answer to a stream request is an error', async () => {
    const { fetch } = script(json(200, COMPLETION));
    await assert.rejects(
      client(fetch).chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true }),
      (err) => err.constructor === Native1APIError && /application\/json/.test(err.message),
    );
  });
});

describe('JSON endpoints', () => {
  test('create, models, vault request shapes', async () => {
    const { fetch, requests } = script(
      json(200, COMPLETION),
      json(200, { object: 'list', data: [{ id: 'm', object: 'model' }] }),
      json(200, { exists: true, provider: 'together' }),
      json(200, { exists: true, provider: 'together' }),
      json(200, { exists: false }),
    );
    const api = client(fetch);
    assert.deepEqual(await api.chat.completions.create({ model: MODEL, messages: MESSAGES, n: 1 }), COMPLETION);
    assert.deepEqual(await api.models.list(), [{ id: 'm', object: 'model' }]);
    assert.deepEqual(await api.vault.put('tgp_v1_abc', { provider: 'together', validate: true }), {
      exists: true,
      provider: 'together',
    });
    await api.vault.exists();
    assert.deepEqual(await api.vault.delete(), { exists: false });
    const [create, models, put, get, del] = requests;
    assert.deepEqual(JSON.parse(create.body), { model: MODEL, messages: MESSAGES, n: 1 });
    assert.equal(create.headers.get('accept'), 'application/json');
    assert.deepEqual([models.method, models.url], ['GET', `${BASE}/v1/models`]);
    assert.deepEqual([put.method, put.url], ['POST', `${BASE}/v1/vault`]);
    assert.deepEqual(JSON.parse(put.body), { apiKey: 'tgp_v1_abc', provider: 'together', validate: true });
    assert.deepEqual([get.method, get.url, get.body], ['GET', `${BASE}/v1/vault`, undefined]);
    assert.deepEqual([del.method, del.url], ['DELETE', `${BASE}/v1/vault`]);
  });

  const cases = [
    [apiError(400, 'decimal_above_max_value', {}, { param: 'temperature' }), BadRequestError, 400],
    [apiError(401, 'invalid_api_key'), AuthenticationError, 401],
    [apiError(403, 'model_not_allowed'), PermissionDeniedError, 403],
    [apiError(404, 'model_not_found'), NotFoundError, 404],
    [apiError(409, 'conflict'), Native1APIError, 409],
    [apiError(429, 'rate_limit_exceeded', { 'retry-after': '7' }), RateLimitError, 429],
    [apiError(502, 'upstream_error'), InternalServerError, 502],
    [apiError(503, 'service_unavailable'), InternalServerError, 503],
    [() => new Response('<html>Bad Gateway</html>', { status: 502 }), InternalServerError, 502],
  ];
  for (const [answer, Cls, status] of cases) {
    test(`HTTP ${status} is ${Cls.name}`, async () => {
      const { fetch } = script(answer);
      await assert.rejects(client(fetch).models.list(), (err) => {
        assert.equal(err.constructor, Cls);
        assert.equal(err.name, Cls.name);
        assert.equal(err.status, status);
        assert.ok(err.headers instanceof Headers);
        if (err.code) assert.equal(err.requestId, `rid-${status}`);
        if (status === 400) assert.equal(err.param, 'temperature');
        if (status === 429) assert.equal(err.retryAfter, 7);
        return true;
      });
    });
  }

  test('the token and the API key are redacted from errors', async () => {
    const key = 'sk-or-v1-secret-key-material';
    const { fetch } = script(apiError(400, 'x', {}, { message: `bad ${TOKEN} and ${key}`, param: TOKEN }));
    await assert.rejects(client(fetch).vault.put(key), (err) => {
      for (const text of [err.message, String(err), inspect(err), JSON.stringify(err.body), err.param]) {
        assert.ok(!text.includes(TOKEN) && !text.includes(key), text);
      }
      return true;
    });
  });

  test('getToken is called per request (sync or async)', async () => {
    const { fetch, requests } = script(json(200, { exists: false }));
    let n = 0;
    const api = new Native1API({ baseUrl: BASE + '/v1/', fetch, getToken: async () => `${TOKEN}-${n++}` });
    await api.vault.exists();
    await api.vault.exists();
    const plain = new Native1API({ baseUrl: BASE, fetch, getToken: () => 'plain-token' });
    await plain.models.list();
    assert.deepEqual(
      requests.map((r) => r.headers.get('authorization')),
      [`Bearer ${TOKEN}-0`, `Bearer ${TOKEN}-1`, 'Bearer plain-token'],
    );
    assert.equal(requests[0].url, `${BASE}/v1/vault`);
  });

  test('an empty token from getToken sends nothing', async () => {
    const { fetch, requests } = script(json(200, {}));
    const api = new Native1API({ baseUrl: BASE, fetch, getToken: async () => null });
    await assert.rejects(api.models.list(), (err) => err instanceof AuthenticationError && err.code === 'missing_token');
    assert.equal(requests.length, 0);
  });

  test('retries 429/502/503 honouring retry-after-ms, with a fresh token each time', async () => {
    const fast = { 'retry-after-ms': '5' };
    const { fetch, requests } = script(
      apiError(429, 'r', fast),
      apiError(502, 'u', fast),
      apiError(503, 's', fast),
      json(200, COMPLETION),
    );
    let n = 0;
    const api = new Native1API({ baseUrl: BASE, fetch, getToken: () => `t${n++}`, maxRetries: 3 });
    assert.deepEqual(await api.chat.completions.create({ model: MODEL, messages: MESSAGES }), COMPLETION);
    assert.deepEqual(requests.map((r) => r.headers.get('authorization')), ['Bearer t0', 'Bearer t1', 'Bearer t2', 'Bearer t3']);
  });

  test('no retries by default, none for other statuses, capped Retry-After', async () => {
    let s = script(apiError(503, 's', { 'retry-after-ms': '1' }));
    await assert.rejects(client(s.fetch).models.list(), InternalServerError);
    assert.equal(s.requests.length, 1);
    s = script(apiError(500, 's'));
    await assert.rejects(client(s.fetch, { maxRetries: 2 }).models.list(), InternalServerError);
    assert.equal(s.requests.length, 1);
    s = script(apiError(429, 'r', { 'retry-after': '3600' }), json(200, []));
    const started = Date.now();
    await client(s.fetch, { maxRetries: 1, maxRetryDelay: 20 }).models.list();
    assert.ok(Date.now() - started < 1000);
  });

  test('connection errors, refused connections retried', async () => {
    const refused = Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) });
    const s = script(() => {
      throw refused;
    }, json(200, { exists: false }));
    assert.deepEqual(await client(s.fetch, { maxRetries: 1, maxRetryDelay: 1 }).vault.exists(), { exists: false });
    const down = script(() => {
      throw new TypeError(`fetch failed for ${TOKEN}`);
    });
    await assert.rejects(client(down.fetch, { maxRetries: 2 }).models.list(), (err) => {
      assert.ok(err instanceof APIConnectionError);
      assert.equal(err.status, null);
      assert.ok(!err.message.includes(TOKEN));
      return true;
    });
    assert.equal(down.requests.length, 1); // not a refused connection: not retried
  });

  test('timeout', async () => {
    const hang = (url, init) =>
      new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(init.signal.reason)));
    await assert.rejects(client(hang, { timeout: 20 }).models.list(), APIConnectionTimeoutError);
  });
});

describe('client', () => {
  test('constructor checks', () => {
    assert.throws(() => new Native1API({ baseUrl: BASE }), TypeError);
    assert.throws(() => new Native1API({ baseUrl: BASE, token: TOKEN, getToken: () => TOKEN }), TypeError);
    assert.throws(() => new Native1API({ baseUrl: BASE, token: ' ' }), TypeError);
    assert.throws(() => new Native1API({ baseUrl: 'gateway.test', token: TOKEN }), TypeError);
    assert.equal(new Native1API({ baseUrl: `${BASE}/v1/`, token: TOKEN }).baseUrl, BASE);
  });

  test('the token never shows in inspect, JSON or String', () => {
    const api = new Native1API({ baseUrl: BASE, token: TOKEN });
    for (const text of [inspect(api), JSON.stringify(api), String(api), Object.keys(api).join()]) {
      assert.ok(!text.includes(TOKEN), text);
    }
  });
});

describe('App Check', () => {
  const APP_CHECK = 'eyJhbGciOiJSUzI1NiJ9.app-check-token.c2ln';

  test('getAppCheckToken: X-Firebase-AppCheck on every request, fresh each time (sync or async)', async () => {
    const { fetch, requests } = script(
      json(200, COMPLETION),
      sse(frames()),
      json(200, { object: 'list', data: [] }),
      json(200, { exists: true, provider: 'openrouter' }),
      json(200, { exists: true, provider: 'openrouter' }),
      json(200, { exists: false }),
    );
    let n = 0;
    const api = client(fetch, {
      getAppCheckToken: async () => `${APP_CHECK}-${n++}`,
      // The provider's token wins over a header given by hand.
      defaultHeaders: { 'X-Firebase-AppCheck': 'stale' },
    });
    await api.chat.completions.create({ model: MODEL, messages: MESSAGES });
    await collect(await api.chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true }));
    await api.models.list();
    await api.vault.put('sk-or-v1-abc', { headers: { 'x-firebase-appcheck': 'stale' } });
    await api.vault.exists();
    await api.vault.delete();
    assert.deepEqual(
      requests.map((r) => r.headers.get('x-firebase-appcheck')),
      [0, 1, 2, 3, 4, 5].map((i) => `${APP_CHECK}-${i}`),
    );
    assert.ok(requests.every((r) => r.headers.get('authorization') === `Bearer ${TOKEN}`));
    const plain = script(json(200, { exists: false }));
    await client(plain.fetch, { getAppCheckToken: () => APP_CHECK }).vault.exists();
    assert.equal(plain.requests[0].headers.get('x-firebase-appcheck'), APP_CHECK);
  });

  test('without getAppCheckToken no App Check header is added', async () => {
    const { fetch, requests } = script(json(200, { exists: false }));
    await client(fetch).vault.exists();
    await client(fetch, { defaultHeaders: { 'x-firebase-appcheck': 'by-hand' } }).vault.exists();
    assert.deepEqual(
      requests.map((r) => r.headers.get('x-firebase-appcheck')),
      [null, 'by-hand'],
    );
  });

  test('an empty App Check token sends nothing', async () => {
    const { fetch, requests } = script(json(200, {}));
    const api = client(fetch, { getAppCheckToken: async () => '' });
    await assert.rejects(
      api.models.list(),
      (err) => err instanceof AuthenticationError && err.code === 'missing_app_check_token',
    );
    assert.equal(requests.length, 0);
    assert.throws(() => client(fetch, { getAppCheckToken: APP_CHECK }), TypeError);
  });

  test('the App Check token is redacted from errors and never shows in the client', async () => {
    const { fetch } = script(
      apiError(401, 'invalid_app_check_token', {}, { message: `App Check token rejected: ${APP_CHECK}` }),
    );
    const api = client(fetch, { getAppCheckToken: () => APP_CHECK });
    await assert.rejects(api.chat.completions.create({ model: MODEL, messages: MESSAGES }), (err) => {
      assert.ok(err instanceof AuthenticationError);
      assert.equal(err.code, 'invalid_app_check_token');
      for (const text of [err.message, String(err), inspect(err), JSON.stringify(err.body)]) {
        assert.ok(!text.includes(APP_CHECK), text);
      }
      return true;
    });
    for (const text of [inspect(api), JSON.stringify(api), String(api), Object.keys(api).join()]) {
      assert.ok(!text.includes(APP_CHECK), text);
    }
  });
});

describe('token refresh on 401', () => {
  const refused = (code = 'invalid_api_key') =>
    apiError(401, code, { 'www-authenticate': 'Bearer error="invalid_token"' });

  test('a refused ID token: one forced refresh, the request sent again (JSON and stream)', async () => {
    const { fetch, requests } = script(refused(), json(200, COMPLETION), refused(), sse(frames()));
    const calls = [];
    const api = new Native1API({
      baseUrl: BASE,
      fetch,
      getToken: ({ forceRefresh }) => {
        calls.push(forceRefresh);
        return forceRefresh ? 'fresh-token' : 'stale-token';
      },
    });
    assert.deepEqual(await api.chat.completions.create({ model: MODEL, messages: MESSAGES }), COMPLETION);
    const chunks = await collect(await api.chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true }));
    assert.equal(chunks.length, CHUNKS.length);
    assert.deepEqual(calls, [false, true, false, true]);
    assert.deepEqual(
      requests.map((r) => r.headers.get('authorization')),
      ['Bearer stale-token', 'Bearer fresh-token', 'Bearer stale-token', 'Bearer fresh-token'],
    );
  });

  test('only once: a second refusal is thrown, and is not a retry of maxRetries', async () => {
    const { fetch, requests } = script(refused());
    let n = 0;
    const api = new Native1API({ baseUrl: BASE, fetch, maxRetries: 3, getToken: () => `t${n++}` });
    await assert.rejects(api.models.list(), (err) => err instanceof AuthenticationError && err.status === 401);
    assert.equal(requests.length, 2);
  });

  test('no refresh for a stored provider key rejected (plain Bearer challenge) or a fixed token', async () => {
    let s = script(apiError(401, 'invalid_api_key', { 'www-authenticate': 'Bearer' }));
    const forced = [];
    const api = new Native1API({ baseUrl: BASE, fetch: s.fetch, getToken: (o) => (forced.push(o.forceRefresh), 't') });
    await assert.rejects(api.chat.completions.create({ model: MODEL, messages: MESSAGES }), AuthenticationError);
    assert.equal(s.requests.length, 1);
    assert.deepEqual(forced, [false]);
    s = script(refused());
    await assert.rejects(client(s.fetch).models.list(), AuthenticationError);
    assert.equal(s.requests.length, 1);
  });

  test('a challenge the browser cannot read (not exposed by CORS) counts as the ID token', async () => {
    const { fetch, requests } = script(apiError(401, 'invalid_api_key'), json(200, { exists: false }));
    const api = new Native1API({ baseUrl: BASE, fetch, getToken: ({ forceRefresh }) => (forceRefresh ? 'b' : 'a') });
    assert.deepEqual(await api.vault.exists(), { exists: false });
    assert.deepEqual(requests.map((r) => r.headers.get('authorization')), ['Bearer a', 'Bearer b']);
  });

  test('invalid_app_check_token: one forced App Check refresh, the ID token kept', async () => {
    const { fetch, requests } = script(refused('invalid_app_check_token'), json(200, { exists: false }));
    const idCalls = [];
    const api = client(fetch, {
      token: undefined,
      getToken: ({ forceRefresh }) => (idCalls.push(forceRefresh), TOKEN),
      getAppCheckToken: ({ forceRefresh }) => (forceRefresh ? 'ac-fresh' : 'ac-stale'),
    });
    await api.vault.exists();
    assert.deepEqual(requests.map((r) => r.headers.get('x-firebase-appcheck')), ['ac-stale', 'ac-fresh']);
    assert.deepEqual(idCalls, [false, false]);
  });

  test('firebaseIdToken: getIdToken(forceRefresh) of the signed-in user; nobody signed in sends nothing', async () => {
    const asked = [];
    const auth = { currentUser: { getIdToken: async (force) => (asked.push(force), force ? 'new' : 'cached') } };
    const { fetch, requests } = script(refused(), json(200, { exists: false }));
    const api = new Native1API({ baseUrl: BASE, fetch, getToken: firebaseIdToken(auth) });
    await api.vault.exists();
    assert.deepEqual(asked, [false, true]);
    assert.deepEqual(requests.map((r) => r.headers.get('authorization')), ['Bearer cached', 'Bearer new']);
    auth.currentUser = null;
    await assert.rejects(api.vault.exists(), (err) => err instanceof AuthenticationError && err.code === 'not_signed_in');
    assert.equal(requests.length, 2);
  });

  test('appCheckToken wraps firebase/app-check getToken', async () => {
    const seen = [];
    const provider = appCheckToken(async (instance, force) => (seen.push([instance, force]), { token: 'ac' }), 'instance');
    assert.equal(await provider({ forceRefresh: true }), 'ac');
    assert.deepEqual(seen, [['instance', true]]);
  });

  test('stream.rateLimit and usage.retrieve()', async () => {
    const headers = {
      ...SSE_HEADERS,
      'x-ratelimit-limit-requests': '60',
      'x-ratelimit-remaining-requests': '59',
      'x-ratelimit-reset-requests': '1s',
    };
    const usage = { object: 'usage', tier: 'default' };
    const { fetch, requests } = script(
      (init) => new Response(body([frames()], { signal: init.signal }), { status: 200, headers }),
      json(200, usage),
    );
    const api = client(fetch);
    const stream = await api.chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true });
    assert.deepEqual(stream.rateLimit, {
      limitRequests: 60,
      remainingRequests: 59,
      resetRequests: '1s',
      limitTokens: null,
      remainingTokens: null,
      resetTokens: null,
    });
    await collect(stream);
    assert.deepEqual(await api.usage.retrieve(), usage);
    assert.equal(requests[1].url, `${BASE}/v1/usage`);
    assert.equal(requests[1].method, 'GET');
  });
});
