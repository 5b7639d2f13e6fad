/**
 * Native1API client for browsers and Node >= 18: one file, no dependencies, `fetch`-based.
 * Copy it into your project.
 *
 * Native1API is an OpenAI-compatible gateway whose callers authenticate with a Firebase ID token:
 *
 *     import { Native1API } from './native1api.mjs';
 *
 *     const client = new Native1API({
 *       baseUrl: 'https://ai.example.com',
 *       getToken: firebaseIdToken(auth), // per request; forced refresh + one retry on a 401
 *     });
 *     const completion = await client.chat.completions.create({
 *       model: '@cf/meta/llama-3.2-3b-instruct',
 *       messages: [{ role: 'user', content: 'Hello' }],
 *     });
 *     const stream = await client.chat.completions.create({ model, messages, stream: true });
 *     for await (const chunk of stream) console.log(chunk.choices[0]?.delta?.content ?? '');
 *
 * Responses are the plain OpenAI JSON objects. Failures throw subclasses of `Native1APIError`
 * (`BadRequestError`, `AuthenticationError`, `RateLimitError`, ...); an error that arrives after
 * a stream started throws `StreamError`; cancelling with an `AbortSignal` (or `stream.abort()`)
 * throws `APIUserAbortError`. The token is never put in an error.
 *
 * When the gateway enforces Firebase App Check, also pass `getAppCheckToken` (e.g.
 * `appCheckToken(getToken, appCheck)` with `firebase/app-check`'s `getToken`): it is called per
 * request and its token sent as `X-Firebase-AppCheck`.
 *
 * Token providers receive `{forceRefresh}`. When the gateway refuses the ID token (401 with the
 * `Bearer error="invalid_token"` challenge: expired, revoked, signed before a key rotation) the
 * client asks `getToken({forceRefresh: true})` once and sends the request again; likewise
 * `getAppCheckToken({forceRefresh: true})` after a 401 `invalid_app_check_token`. A 401 for a
 * stored provider key (plain `Bearer` challenge) is not retried: a new ID token cannot fix it.
 *
 * @module native1api
 */

export const VERSION = '0.1.0';

const DEFAULT_TIMEOUT_MS = 600_000;
const APP_CHECK_HEADER = 'x-firebase-appcheck';
const DEFAULT_MAX_RETRY_DELAY_MS = 20_000;
const RETRY_STATUSES = new Set([429, 502, 503]);
const REDACTED = '[redacted]';

// ---------------------------------------------------------------------------------------------
// Types (JSDoc)
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {object} ChatMessage
 * @property {'system'|'developer'|'user'|'assistant'|'tool'|'function'} role
 * @property {string|Array<Record<string, unknown>>|null} [content]
 * @property {string} [name]
 * @property {Array<Record<string, unknown>>} [tool_calls]
 * @property {string} [tool_call_id]
 */

/**
 * Every OpenAI Chat Completions request field is accepted and sent as is
 * (`temperature`, `max_tokens`, `tools`, `stream_options`, ...).
 * @typedef {{model: string, messages: ChatMessage[], stream?: boolean} & Record<string, unknown>} ChatCompletionCreateParams
 */

/**
 * @typedef {object} ChatCompletion
 * @property {string} id
 * @property {'chat.completion'} object
 * @property {number} created
 * @property {string} model
 * @property {Array<{index: number, message: {role: 'assistant', content: string|null, tool_calls?: Array<Record<string, unknown>>}, logprobs: unknown, finish_reason: string}>} choices
 * @property {{prompt_tokens: number, completion_tokens: number, total_tokens: number}} [usage]
 */

/**
 * @typedef {object} ChatCompletionChunk
 * @property {string} id
 * @property {'chat.completion.chunk'} object
 * @property {number} created
 * @property {string} model
 * @property {Array<{index: number, delta: {role?: 'assistant', content?: string|null, tool_calls?: Array<Record<string, unknown>>}, logprobs?: unknown, finish_reason: string|null}>} choices
 * @property {{prompt_tokens: number, completion_tokens: number, total_tokens: number}|null} [usage]
 */

/**
 * @typedef {object} Model
 * @property {string} id
 * @property {'model'} object
 * @property {number} created
 * @property {string} owned_by
 */

/**
 * @typedef {object} VaultStatus
 * @property {boolean} exists
 * @property {'openrouter'|'together'} [provider]
 */

/**
 * @typedef {object} RequestOptions
 * @property {AbortSignal} [signal] cancels the request, and for a stream the whole stream
 * @property {Record<string, string>} [headers] extra request headers (e.g. `x-request-id`)
 * @property {number} [timeout] milliseconds; for a stream it covers the wait for the response head
 */

/**
 * A token provider. `forceRefresh` is true only when the gateway just refused the token it
 * returned last time: it should then get a new one from Firebase, not its cache.
 * @typedef {(options: {forceRefresh: boolean}) => string|Promise<string>} TokenProvider
 */

/**
 * @typedef {object} Native1APIOptions
 * @property {string} baseUrl e.g. `http://127.0.0.1:8080` (a trailing `/v1` is accepted too)
 * @property {string} [token] a Firebase ID token; give this or `getToken`
 * @property {TokenProvider} [getToken] returns the current ID token, called per request (e.g.
 *   `firebaseIdToken(auth)`); with `{forceRefresh: true}` after the gateway refused one
 * @property {TokenProvider} [getAppCheckToken] returns the current Firebase App Check token,
 *   called per request and sent as `X-Firebase-AppCheck` (e.g. `appCheckToken(getToken, appCheck)`)
 * @property {typeof fetch} [fetch] a fetch implementation (default: the global one)
 * @property {number} [timeout] milliseconds (default 600000)
 * @property {number} [maxRetries] retries for 429/502/503 and refused connections (default 0)
 * @property {number} [maxRetryDelay] longest wait between retries in ms, whatever Retry-After says
 *   (default 20000)
 * @property {Record<string, string>} [defaultHeaders] headers sent with every request
 */

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {object} ErrorDetails
 * @property {number|null} [status]
 * @property {string|null} [code]
 * @property {string|null} [param]
 * @property {string|null} [type]
 * @property {string|null} [requestId]
 * @property {Headers|null} [headers]
 * @property {unknown} [body]
 * @property {unknown} [cause]
 * @property {number|null} [retryAfter]
 */

/** Base of every error this client throws; fields mirror the OpenAI error envelope. */
export class Native1APIError extends Error {
  /**
   * @param {string} message
   * @param {ErrorDetails} [details]
   */
  constructor(message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    /** @type {number|null} HTTP status; null without a response, or inside a stream */
    this.status = details.status ?? null;
    /** @type {string|null} */
    this.code = details.code ?? null;
    /** @type {string|null} */
    this.param = details.param ?? null;
    /** @type {string|null} */
    this.type = details.type ?? null;
    /** @type {string|null} the response's `x-request-id`: quote it when reporting a problem */
    this.requestId = details.requestId ?? null;
    /** @type {Headers|null} */
    this.headers = details.headers ?? null;
    /** @type {unknown} the `error` object of the response, when there was one */
    this.body = details.body;
  }
}

/** HTTP 400: the request is invalid (`param` names the field). */
export class BadRequestError extends Native1APIError {}
/** HTTP 401: missing, expired or invalid ID token, or a stored provider key was rejected. */
export class AuthenticationError extends Native1APIError {}
/** HTTP 403. */
export class PermissionDeniedError extends Native1APIError {}
/** HTTP 404: unknown model (`code === 'model_not_found'`) or route. */
export class NotFoundError extends Native1APIError {}
/** HTTP 429; `retryAfter` is the server's Retry-After in seconds, when sent. */
export class RateLimitError extends Native1APIError {
  /**
   * @param {string} message
   * @param {ErrorDetails} [details]
   */
  constructor(message, details = {}) {
    super(message, details);
    /** @type {number|null} */
    this.retryAfter = details.retryAfter ?? null;
  }
}
/** HTTP >= 500: 502 upstream failed, 503 a backend is down, 504 upstream timeout. */
export class InternalServerError extends Native1APIError {}
/** No HTTP response: the server could not be reached or the connection failed. */
export class APIConnectionError extends Native1APIError {}
/** The request timed out before the response (head) arrived. */
export class APIConnectionTimeoutError extends APIConnectionError {}
/** The caller aborted the request or stream (`AbortSignal`, `stream.abort()`). */
export class APIUserAbortError extends Native1APIError {}
/** A stream failed after it started: an error frame, a lost connection or a truncated stream. */
export class StreamError extends Native1APIError {}

for (const cls of [
  Native1APIError,
  BadRequestError,
  AuthenticationError,
  PermissionDeniedError,
  NotFoundError,
  RateLimitError,
  InternalServerError,
  APIConnectionError,
  APIConnectionTimeoutError,
  APIUserAbortError,
  StreamError,
]) {
  // Survives minifiers that rename classes.
  Object.defineProperty(cls.prototype, 'name', { value: cls.name, writable: true, configurable: true });
}

/** @type {Record<number, typeof Native1APIError>} */
const STATUS_ERRORS = {
  400: BadRequestError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  429: RateLimitError,
};

/**
 * @param {string} text
 * @param {string[]} secrets
 */
function scrub(text, secrets) {
  let out = String(text);
  for (const secret of secrets) {
    if (secret) out = out.split(secret).join(REDACTED);
  }
  return out;
}

/**
 * @param {unknown} value
 * @param {string[]} secrets
 * @returns {unknown}
 */
function scrubValue(value, secrets) {
  if (typeof value === 'string') return scrub(value, secrets);
  if (Array.isArray(value)) return value.map((item) => scrubValue(item, secrets));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, scrubValue(v, secrets)]));
  }
  return value;
}

/**
 * @param {Record<string, unknown>} detail
 * @param {string} name
 * @param {string[]} secrets
 * @returns {string|null}
 */
function field(detail, name, secrets) {
  const value = detail[name];
  return value === undefined || value === null ? null : scrub(String(value), secrets);
}

/**
 * Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date).
 * @param {Headers} headers
 * @returns {number|null}
 */
function parseRetryAfter(headers) {
  const ms = headers.get('retry-after-ms');
  if (ms && Number.isFinite(Number(ms)) && Number(ms) >= 0) return Number(ms) / 1000;
  const raw = headers.get('retry-after');
  if (!raw) return null;
  const seconds = Number(raw);
  if (raw.trim() !== '' && Number.isFinite(seconds)) return seconds >= 0 ? seconds : null;
  const when = Date.parse(raw);
  return Number.isNaN(when) ? null : Math.max(0, (when - Date.now()) / 1000);
}

/**
 * The error for a non-2xx response whose body was read into `text`.
 * @param {Response} response
 * @param {string} text
 * @param {string[]} secrets
 */
function errorFromResponse(response, text, secrets) {
  const status = response.status;
  /** @type {unknown} */
  let payload = null;
  try {
    payload = JSON.parse(text);
  } catch {
    payload = null;
  }
  const detail =
    payload && typeof payload === 'object' && 'error' in payload
      ? /** @type {Record<string, unknown>} */ (payload).error
      : payload;
  let message;
  /** @type {ErrorDetails} */
  const details = {
    status,
    requestId: response.headers.get('x-request-id'),
    headers: response.headers,
    body: scrubValue(detail, secrets),
  };
  if (detail && typeof detail === 'object' && !Array.isArray(detail)) {
    const d = /** @type {Record<string, unknown>} */ (detail);
    message = field(d, 'message', secrets) || `HTTP ${status}`;
    details.type = field(d, 'type', secrets);
    details.code = field(d, 'code', secrets);
    details.param = field(d, 'param', secrets);
  } else if (typeof detail === 'string' && detail) {
    message = detail;
  } else {
    message = text.trim().slice(0, 500) || `HTTP ${status} ${response.statusText}`.trim();
  }
  message = scrub(message, secrets);
  if (status === 429) {
    return new RateLimitError(message, { ...details, retryAfter: parseRetryAfter(response.headers) });
  }
  const Cls = status >= 500 ? InternalServerError : STATUS_ERRORS[status] ?? Native1APIError;
  return new Cls(message, details);
}

// ---------------------------------------------------------------------------------------------
// Server-sent events
// ---------------------------------------------------------------------------------------------

/**
 * An incremental `text/event-stream` parser (WHATWG HTML §9.2.6), data only: feed it decoded
 * text as it arrives, it returns the `data` of each complete event. Lines end with CRLF, LF or
 * CR (even split across reads); `:` lines are comments; several `data:` lines are joined with
 * "\n"; one space after the colon is dropped; other fields are ignored; an event without data is
 * not dispatched; an unterminated event at the end is discarded.
 */
export class SSEParser {
  constructor() {
    this._pending = '';
    /** @type {string[]} */
    this._data = [];
    this._hasData = false;
  }

  /**
   * @param {string} text
   * @returns {string[]}
   */
  feed(text) {
    return this._lines(this._pending + text);
  }

  /** End of input: a final CR still ends a line. @returns {string[]} */
  end() {
    const text = this._pending;
    this._pending = '';
    return text.endsWith('\r') ? this._lines(text + '\n') : [];
  }

  /**
   * @param {string} text
   * @returns {string[]}
   */
  _lines(text) {
    /** @type {string[]} */
    const events = [];
    let start = 0;
    let cr = text.indexOf('\r');
    let lf = text.indexOf('\n');
    for (;;) {
      if (cr >= 0 && cr < start) cr = text.indexOf('\r', start);
      if (lf >= 0 && lf < start) lf = text.indexOf('\n', start);
      if (cr < 0 && lf < 0) break;
      let end;
      let after;
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        if (cr + 1 === text.length) break; // a CR at the end: an LF may follow in the next read
        end = cr;
        after = text[cr + 1] === '\n' ? cr + 2 : cr + 1;
      } else {
        end = lf;
        after = lf + 1;
      }
      const event = this._line(text.slice(start, end));
      if (event !== null) events.push(event);
      start = after;
    }
    this._pending = text.slice(start);
    return events;
  }

  /**
   * @param {string} line
   * @returns {string|null}
   */
  _line(line) {
    if (line === '') {
      if (!this._hasData) return null;
      const data = this._data.join('\n');
      this._data = [];
      this._hasData = false;
      return data;
    }
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'data') {
      this._data.push(value);
      this._hasData = true;
    }
    return null;
  }
}

const DONE = Symbol('done');

/**
 * @param {string} data
 * @param {string|null} requestId
 * @param {string[]} secrets
 * @returns {ChatCompletionChunk|typeof DONE}
 */
function chunkFromEvent(data, requestId, secrets) {
  if (data.startsWith('[DONE]')) return DONE;
  let payload;
  try {
    payload = JSON.parse(data);
  } catch {
    throw new StreamError('The server sent a stream frame that is not JSON.', {
      code: 'invalid_stream_frame',
      requestId,
    });
  }
  if (payload && typeof payload === 'object' && !Array.isArray(payload) && payload.error) {
    const detail = payload.error;
    if (detail && typeof detail === 'object') {
      throw new StreamError(field(detail, 'message', secrets) || 'An error occurred during streaming', {
        type: field(detail, 'type', secrets),
        code: field(detail, 'code', secrets),
        param: field(detail, 'param', secrets),
        requestId,
        body: scrubValue(detail, secrets),
      });
    }
    throw new StreamError(scrub(String(detail), secrets), { requestId, body: scrubValue(detail, secrets) });
  }
  if (!payload || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new StreamError('The server sent a stream frame that is not a JSON object.', {
      code: 'invalid_stream_frame',
      requestId,
    });
  }
  return /** @type {ChatCompletionChunk} */ (payload);
}

/**
 * An async iterable of the `chat.completion.chunk` objects of one streamed completion. It ends
 * at `[DONE]`; throws `StreamError` if the server reports an error or the stream breaks off, and
 * `APIUserAbortError` when aborted. Leaving a `for await` loop early (`break`) cancels the
 * stream. It can be iterated once.
 * @implements {AsyncIterable<ChatCompletionChunk>}
 */
export class ChatCompletionStream {
  /**
   * @param {Response} response
   * @param {AbortController} controller
   * @param {{aborted: () => boolean, release: () => void}} link
   * @param {string[]} secrets
   */
  constructor(response, controller, link, secrets) {
    /** @type {Response} */
    this.response = response;
    /** The controller behind the request: `stream.controller.abort()` cancels it. */
    this.controller = controller;
    /** @type {string|null} the response's `x-request-id` */
    this.requestId = response.headers.get('x-request-id');
    /** @type {string|null} `workers-ai`, `openrouter` or `together` */
    this.provider = response.headers.get('x-native1api-provider');
    /** @type {RateLimitState} the caller's limits after this request was admitted */
    this.rateLimit = rateLimitState(response.headers);
    this._link = link;
    this._secrets = secrets;
    this._consumed = false;
  }

  /** Cancel the stream: a pending or later read throws `APIUserAbortError`. */
  abort() {
    this.controller.abort();
  }

  /** @returns {AsyncIterator<ChatCompletionChunk>} */
  [Symbol.asyncIterator]() {
    if (this._consumed) throw new Native1APIError('This stream was already iterated.');
    this._consumed = true;
    return this._iterate();
  }

  /** @returns {AsyncGenerator<ChatCompletionChunk, void, undefined>} */
  async *_iterate() {
    const body = this.response.body;
    if (!body) throw new StreamError('The response has no body.', { requestId: this.requestId });
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SSEParser();
    let finished = false;
    try {
      for (;;) {
        if (this.controller.signal.aborted) throw this._abortError();
        let result;
        try {
          result = await reader.read();
        } catch (err) {
          throw this._readError(err);
        }
        if (result.done) break;
        for (const data of parser.feed(result.value)) {
          const chunk = chunkFromEvent(data, this.requestId, this._secrets);
          if (chunk === DONE) {
            finished = true;
            return;
          }
          yield chunk;
        }
      }
      for (const data of parser.end()) {
        const chunk = chunkFromEvent(data, this.requestId, this._secrets);
        if (chunk === DONE) {
          finished = true;
          return;
        }
        yield chunk;
      }
      finished = true;
      throw new StreamError('The stream ended before it was complete (no [DONE]).', {
        code: 'stream_truncated',
        requestId: this.requestId,
      });
    } finally {
      if (!finished) {
        // Stopped early (break, error frame, abort): close the connection so the server knows.
        this.controller.abort();
      }
      reader.cancel().catch(() => {});
      this._link.release();
    }
  }

  _abortError() {
    return new APIUserAbortError('The stream was aborted.', {
      requestId: this.requestId,
      cause: this.controller.signal.reason,
    });
  }

  /** @param {unknown} err */
  _readError(err) {
    if (this.controller.signal.aborted || this._link.aborted()) return this._abortError();
    const message = err instanceof Error ? err.message : String(err);
    return new StreamError(`The connection failed during the stream: ${scrub(message, this._secrets)}`, {
      code: 'stream_interrupted',
      requestId: this.requestId,
      cause: err,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/**
 * @param {number} ms
 * @param {AbortSignal|undefined} signal
 */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(undefined);
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * One request's controller: aborted by the caller's signal or by the timeout.
 * @param {AbortSignal|undefined} signal
 * @param {number} timeoutMs
 */
function linkSignals(signal, timeoutMs) {
  const controller = new AbortController();
  let timedOut = false;
  let userAborted = false;
  const onAbort = () => {
    userAborted = true;
    controller.abort(signal?.reason);
  };
  if (signal?.aborted) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  const timer =
    Number.isFinite(timeoutMs) && timeoutMs > 0
      ? setTimeout(() => {
          timedOut = true;
          controller.abort(new Error('timeout'));
        }, timeoutMs)
      : undefined;
  return {
    controller,
    timedOut: () => timedOut,
    aborted: () => userAborted,
    clearTimer: () => clearTimeout(timer),
    release: () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    },
  };
}

/** @param {unknown} err */
function isConnectionRefused(err) {
  const cause = /** @type {{cause?: {code?: string}}} */ (err)?.cause;
  return cause?.code === 'ECONNREFUSED';
}

/**
 * An ID-token provider for a Firebase Auth instance (`getAuth(app)` from `firebase/auth`): the
 * signed-in user's `getIdToken()`, which returns the cached token and renews it shortly before it
 * expires; `getIdToken(true)` when the gateway refused it. Throws `AuthenticationError` (code
 * `not_signed_in`) when nobody is signed in, before anything is sent.
 * @param {{currentUser: {getIdToken: (forceRefresh?: boolean) => Promise<string>}|null}} auth
 * @returns {TokenProvider}
 */
export function firebaseIdToken(auth) {
  return ({ forceRefresh } = { forceRefresh: false }) => {
    const user = auth.currentUser;
    if (!user) {
      throw new AuthenticationError('Not signed in: sign in with Firebase first.', {
        code: 'not_signed_in',
      });
    }
    return user.getIdToken(forceRefresh);
  };
}

/**
 * An App Check token provider from `firebase/app-check`'s `getToken` function and an App Check
 * instance: `appCheckToken(getToken, initializeAppCheck(app, {...}))`. (Passed in, so that this
 * file depends on nothing.)
 * @param {(appCheck: unknown, forceRefresh?: boolean) => Promise<{token: string}>} getTokenFn
 * @param {unknown} appCheck
 * @returns {TokenProvider}
 */
export function appCheckToken(getTokenFn, appCheck) {
  return async ({ forceRefresh } = { forceRefresh: false }) =>
    (await getTokenFn(appCheck, forceRefresh)).token;
}

/**
 * @typedef {object} RateLimitState the `x-ratelimit-*` headers of an admitted completion; a field
 *   is null when the caller's tier has no such limit
 * @property {number|null} limitRequests
 * @property {number|null} remainingRequests
 * @property {string|null} resetRequests e.g. `1s`, `6m0s`
 * @property {number|null} limitTokens
 * @property {number|null} remainingTokens
 * @property {string|null} resetTokens
 */

/**
 * The rate-limit state in a response's headers (`stream.response.headers`).
 * @param {Headers} headers
 * @returns {RateLimitState}
 */
export function rateLimitState(headers) {
  /** @param {string} name */
  const num = (name) => {
    const raw = headers.get(name);
    return raw === null || raw.trim() === '' || !Number.isFinite(Number(raw)) ? null : Number(raw);
  };
  return {
    limitRequests: num('x-ratelimit-limit-requests'),
    remainingRequests: num('x-ratelimit-remaining-requests'),
    resetRequests: headers.get('x-ratelimit-reset-requests'),
    limitTokens: num('x-ratelimit-limit-tokens'),
    remainingTokens: num('x-ratelimit-remaining-tokens'),
    resetTokens: headers.get('x-ratelimit-reset-tokens'),
  };
}

export class Native1API {
  /** @param {Native1APIOptions} options */
  constructor(options) {
    const { baseUrl, token, getToken, getAppCheckToken } =
      options ?? /** @type {Native1APIOptions} */ ({});
    if ((token === undefined) === (getToken === undefined)) {
      throw new TypeError('Native1API: pass exactly one of `token` or `getToken`');
    }
    if (token !== undefined && (typeof token !== 'string' || !token.trim())) {
      throw new TypeError('Native1API: `token` must be a non-empty string');
    }
    if (getToken !== undefined && typeof getToken !== 'function') {
      throw new TypeError('Native1API: `getToken` must be a function');
    }
    if (getAppCheckToken !== undefined && typeof getAppCheckToken !== 'function') {
      throw new TypeError('Native1API: `getAppCheckToken` must be a function');
    }
    if (typeof baseUrl !== 'string' || !/^https?:\/\//.test(baseUrl)) {
      throw new TypeError('Native1API: `baseUrl` must start with http:// or https://');
    }
    /** @type {string} */
    this.baseUrl = baseUrl.replace(/\/+$/, '').replace(/\/v1$/, '');
    /** @type {number} */
    this.timeout = options.timeout ?? DEFAULT_TIMEOUT_MS;
    /** @type {number} */
    this.maxRetries = options.maxRetries ?? 0;
    /** @type {number} */
    this.maxRetryDelay = options.maxRetryDelay ?? DEFAULT_MAX_RETRY_DELAY_MS;
    const fetchImpl = options.fetch;
    // Wrapped: a browser's fetch must be called with `this` bound to the window.
    /** @type {typeof fetch} */
    this._fetch = fetchImpl ?? ((input, init) => globalThis.fetch(input, init));
    this._defaultHeaders = { ...(options.defaultHeaders ?? {}) };
    // Private fields keep the token out of console.log / JSON.stringify of the client.
    Object.defineProperty(this, '_token', { value: token, enumerable: false });
    Object.defineProperty(this, '_getToken', { value: getToken, enumerable: false });
    Object.defineProperty(this, '_getAppCheckToken', { value: getAppCheckToken, enumerable: false });

    const client = this;
    this.chat = {
      completions: {
        /**
         * Create a chat completion. With `stream: true` the promise resolves, once the response
         * head arrived, to a `ChatCompletionStream` (an async iterable of chunks).
         * @overload
         * @param {ChatCompletionCreateParams & {stream: true}} params
         * @param {RequestOptions} [options]
         * @returns {Promise<ChatCompletionStream>}
         */
        /**
         * @overload
         * @param {ChatCompletionCreateParams & {stream?: false}} params
         * @param {RequestOptions} [options]
         * @returns {Promise<ChatCompletion>}
         */
        /**
         * @param {ChatCompletionCreateParams} params
         * @param {RequestOptions} [options]
         * @returns {Promise<ChatCompletion|ChatCompletionStream>}
         */
        create(params, options = {}) {
          if (params?.stream) return client._stream('/v1/chat/completions', params, options);
          return client._json('POST', '/v1/chat/completions', params, options);
        },
      },
    };
    this.models = {
      /**
       * The models the caller can use (`data` of the OpenAI list object).
       * @param {RequestOptions} [options]
       * @returns {Promise<Model[]>}
       */
      async list(options = {}) {
        const page = await client._json('GET', '/v1/models', undefined, options);
        return Array.isArray(page?.data) ? page.data : [];
      },
    };
    this.vault = {
      /**
       * Save or replace the caller's provider key. `provider` may be omitted for keys whose prefix
       * names it (`sk-or-`, `tgp_`); `validate: true` has the server check the key first.
       * @param {string} apiKey
       * @param {{provider?: 'openrouter'|'together', validate?: boolean} & RequestOptions} [options]
       * @returns {Promise<VaultStatus>}
       */
      put(apiKey, options = {}) {
        const { provider, validate, ...rest } = options;
        /** @type {Record<string, unknown>} */
        const body = { apiKey };
        if (provider !== undefined) body.provider = provider;
        if (validate) body.validate = true;
        return client._json('POST', '/v1/vault', body, rest, [apiKey]);
      },
      /**
       * `{exists}` plus `provider` when a key is stored. Never the key.
       * @param {RequestOptions} [options]
       * @returns {Promise<VaultStatus>}
       */
      exists(options = {}) {
        return client._json('GET', '/v1/vault', undefined, options);
      },
      /**
       * Delete the caller's key (idempotent); resolves to `{exists: false}`.
       * @param {RequestOptions} [options]
       * @returns {Promise<VaultStatus>}
       */
      delete(options = {}) {
        return client._json('DELETE', '/v1/vault', undefined, options);
      },
    };
    this.usage = {
      /**
       * The caller's tier, limits, what remains, when it resets and today's totals
       * (`GET /v1/usage`, the plain JSON object).
       * @param {RequestOptions} [options]
       * @returns {Promise<Record<string, any>>}
       */
      retrieve(options = {}) {
        return client._json('GET', '/v1/usage', undefined, options);
      },
    };
  }

  /** @returns {string} */
  toString() {
    return `Native1API(${this.baseUrl})`;
  }

  /** Node's util.inspect: never show the token. */
  [Symbol.for('nodejs.util.inspect.custom')]() {
    return `Native1API { baseUrl: '${this.baseUrl}' }`;
  }

  toJSON() {
    return { baseUrl: this.baseUrl };
  }

  /**
   * @param {boolean} [forceRefresh]
   * @returns {Promise<string>}
   */
  async _currentToken(forceRefresh = false) {
    const self = /** @type {{_token?: string, _getToken?: TokenProvider}} */ (
      /** @type {unknown} */ (this)
    );
    const token = self._getToken ? await self._getToken({ forceRefresh }) : self._token;
    if (typeof token !== 'string' || !token.trim()) {
      throw new AuthenticationError('No Firebase ID token: getToken returned an empty value.', {
        code: 'missing_token',
      });
    }
    return token.trim();
  }

  /**
   * @param {boolean} [forceRefresh]
   * @returns {Promise<string|null>} the App Check token, or null without `getAppCheckToken`
   */
  async _currentAppCheckToken(forceRefresh = false) {
    const self = /** @type {{_getAppCheckToken?: TokenProvider}} */ (/** @type {unknown} */ (this));
    if (!self._getAppCheckToken) return null;
    const token = await self._getAppCheckToken({ forceRefresh });
    if (typeof token !== 'string' || !token.trim()) {
      throw new AuthenticationError(
        'No Firebase App Check token: getAppCheckToken returned an empty value.',
        { code: 'missing_app_check_token' },
      );
    }
    return token.trim();
  }

  /**
   * Send with retries; resolves to a 2xx response and the request's abort link.
   * @param {string} method
   * @param {string} path
   * @param {unknown} body
   * @param {RequestOptions} options
   * @param {{accept: string, stream: boolean, secrets: string[]}} how
   */
  async _send(method, path, body, options, how) {
    const timeout = options.timeout ?? this.timeout;
    // One forced refresh of each token per call, not counted as a retry (see `_refreshFor`).
    const refresh = { idToken: false, appCheck: false, idTokenDone: false, appCheckDone: false };
    for (let attempt = 0; ; attempt++) {
      if (options.signal?.aborted) {
        throw new APIUserAbortError('The request was aborted.', { cause: options.signal.reason });
      }
      const token = await this._currentToken(refresh.idToken);
      const appCheck = await this._currentAppCheckToken(refresh.appCheck);
      refresh.idToken = false;
      refresh.appCheck = false;
      const secrets = appCheck === null ? [token, ...how.secrets] : [token, appCheck, ...how.secrets];
      /** @type {Record<string, string>} */
      const headers = { accept: how.accept };
      for (const [name, value] of Object.entries({ ...this._defaultHeaders, ...(options.headers ?? {}) })) {
        // The credential is always the ID token (fetch would join a second Authorization header),
        // and the App Check token the provider's when there is one.
        const lower = name.toLowerCase();
        if (lower !== 'authorization' && !(appCheck !== null && lower === APP_CHECK_HEADER)) {
          headers[lower] = value;
        }
      }
      headers.authorization = `Bearer ${token}`;
      if (appCheck !== null) headers[APP_CHECK_HEADER] = appCheck;
      if (body !== undefined) headers['content-type'] = 'application/json';
      const link = linkSignals(options.signal, timeout);
      /** @type {Native1APIError} */
      let error;
      let retryable = false;
      try {
        const response = await this._fetch(this.baseUrl + path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: link.controller.signal,
        });
        if (response.ok) {
          return { response, link, secrets };
        }
        const text = await response.text();
        link.release();
        error = errorFromResponse(response, text, secrets);
        retryable = RETRY_STATUSES.has(response.status);
        const stale = this._refreshFor(error);
        if (stale === 'idToken' && !refresh.idTokenDone) {
          refresh.idToken = refresh.idTokenDone = true;
          attempt--; // a refreshed credential is not a retry of a failed request
          continue;
        }
        if (stale === 'appCheck' && !refresh.appCheckDone) {
          refresh.appCheck = refresh.appCheckDone = true;
          attempt--;
          continue;
        }
      } catch (err) {
        link.release();
        if (link.aborted()) {
          throw new APIUserAbortError('The request was aborted.', { cause: options.signal?.reason });
        }
        if (link.timedOut()) {
          throw new APIConnectionTimeoutError(`Request timed out after ${timeout} ms.`);
        }
        const message = err instanceof Error ? err.message : String(err);
        const cause = /** @type {{cause?: {message?: string}}} */ (err)?.cause;
        const detail = cause?.message ? `${message} (${cause.message})` : message;
        error = new APIConnectionError(`Connection error: ${scrub(detail, secrets)}`, { cause: err });
        retryable = isConnectionRefused(err);
      }
      if (!retryable || attempt >= this.maxRetries) throw error;
      await sleep(this._retryDelay(error, attempt + 1), options.signal).catch((reason) => {
        throw new APIUserAbortError('The request was aborted.', { cause: reason });
      });
    }
  }

  /**
   * Which token a 401 says is stale, if a fresh one could help: `appCheck` for
   * `invalid_app_check_token` (with an App Check provider), `idToken` when the gateway refused
   * the ID token (challenge `Bearer error="invalid_token"`; with a provider). A 401 for the
   * user's stored provider key has a plain `Bearer` challenge: no refresh. When the challenge
   * cannot be read (a cross-origin server that does not expose `WWW-Authenticate`), any other
   * 401 counts as the ID token's: one useless refresh is cheaper than a user stuck signed out.
   * @param {Native1APIError} error
   * @returns {'idToken'|'appCheck'|null}
   */
  _refreshFor(error) {
    if (error.status !== 401) return null;
    const self = /** @type {{_getToken?: unknown, _getAppCheckToken?: unknown}} */ (
      /** @type {unknown} */ (this)
    );
    if (error.code === 'invalid_app_check_token') return self._getAppCheckToken ? 'appCheck' : null;
    if (!self._getToken) return null;
    const challenge = error.headers?.get('www-authenticate');
    if (challenge === null || challenge === undefined) return 'idToken';
    return /error="invalid_token"/i.test(challenge) ? 'idToken' : null;
  }

  /**
   * @param {Native1APIError} error
   * @param {number} attempt
   */
  _retryDelay(error, attempt) {
    const retryAfter = error.headers ? parseRetryAfter(error.headers) : null;
    if (retryAfter !== null) return Math.min(retryAfter * 1000, this.maxRetryDelay);
    const backoff = Math.min(500 * 2 ** (attempt - 1), 8000);
    return Math.min(backoff * (1 - 0.25 * Math.random()), this.maxRetryDelay);
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} body
   * @param {RequestOptions} options
   * @param {string[]} [secrets]
   * @returns {Promise<any>}
   */
  async _json(method, path, body, options, secrets = []) {
    const sent = await this._send(method, path, body, options, {
      accept: 'application/json',
      stream: false,
      secrets,
    });
    const { response, link } = sent;
    let text;
    try {
      text = await response.text();
    } catch (err) {
      if (link.aborted()) throw new APIUserAbortError('The request was aborted.', { cause: err });
      if (link.timedOut()) throw new APIConnectionTimeoutError('Request timed out.');
      throw new APIConnectionError('Connection error while reading the response.', { cause: err });
    } finally {
      link.release();
    }
    try {
      return JSON.parse(text);
    } catch {
      throw new Native1APIError('The server answered with a body that is not JSON.', {
        status: response.status,
        requestId: response.headers.get('x-request-id'),
        headers: response.headers,
      });
    }
  }

  /**
   * @param {string} path
   * @param {unknown} body
   * @param {RequestOptions} options
   * @returns {Promise<ChatCompletionStream>}
   */
  async _stream(path, body, options) {
    const { response, link, secrets } = await this._send('POST', path, body, options, {
      accept: 'text/event-stream',
      stream: true,
      secrets: [],
    });
    link.clearTimer(); // the timeout covers the wait for the head; pings keep the stream alive
    const type = response.headers.get('content-type') ?? '';
    if (!type.startsWith('text/event-stream')) {
      link.controller.abort();
      link.release();
      throw new Native1APIError(
        `Expected an event stream but the server answered with ${type || 'no content type'}.`,
        { status: response.status, requestId: response.headers.get('x-request-id'), headers: response.headers },
      );
    }
    return new ChatCompletionStream(response, link.controller, link, secrets);
  }
}

export default Native1API;
