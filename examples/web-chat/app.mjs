// The web-chat example: a Firebase web app that talks to a Native1API gateway.
//
// What an app developer copies: sign the user in with the Firebase JS SDK, hand the SDK's
// `getIdToken` to our client (`firebaseIdToken(auth)`), and call the gateway's REST endpoints.
// Everything shown to the user comes from the gateway's answers; nothing here needs a build step.
//
// Configuration comes from ./config.json (the devstack serves one that matches the running stack):
//   gatewayUrl       where the REST bridge listens; it must list this page's origin in
//                    BRIDGE_CORS_ORIGINS, or the browser refuses every call
//   firebase         the Firebase web config (apiKey, authDomain, projectId)
//   authEmulatorUrl  the Firebase Auth Emulator in development; null or absent in production
//   defaultModel     the model selected first when the gateway offers it

import { initializeApp } from 'firebase/app';
import {
  connectAuthEmulator,
  createUserWithEmailAndPassword,
  getAuth,
  onAuthStateChanged,
  signInAnonymously,
  signInWithEmailAndPassword,
  signOut,
} from 'firebase/auth';
import {
  APIConnectionError,
  APIUserAbortError,
  AuthenticationError,
  InternalServerError,
  Native1API,
  Native1APIError,
  RateLimitError,
  StreamError,
  firebaseIdToken,
} from 'native1api';

const $ = (id) => document.getElementById(id);
const PROVIDER_NAMES = { 'workers-ai': 'Workers AI', openrouter: 'OpenRouter', together: 'Together AI' };

const config = await (await fetch('./config.json', { cache: 'no-store' })).json();
const app = initializeApp(config.firebase);
const auth = getAuth(app);
if (config.authEmulatorUrl) {
  // disableWarnings: the SDK would otherwise add its own banner to the bottom of the page.
  connectAuthEmulator(auth, config.authEmulatorUrl, { disableWarnings: true });
}

// The ID-token provider, counting the forced refreshes (the client asks for one when the gateway
// refused a token, e.g. an expired one) so that the page can say so.
const idToken = firebaseIdToken(auth);
let forcedRefreshes = 0;
const client = new Native1API({
  baseUrl: config.gatewayUrl,
  getToken: (options) => {
    if (options.forceRefresh) {
      forcedRefreshes += 1;
      showNotice('The gateway refused your sign-in token; it was refreshed and the request sent again.');
    }
    return idToken(options);
  },
});

/** @type {Array<{role: string, content: string}>} the conversation sent with each request */
const history = [];
let controller = null;

$('gateway-line').textContent =
  `Gateway ${config.gatewayUrl}` + (config.authEmulatorUrl ? ` · Auth Emulator ${config.authEmulatorUrl}` : '');

// ------------------------------------------------------------------------------------------
// Messages
// ------------------------------------------------------------------------------------------

/** A readable sentence for anything the gateway (or the network) can answer. */
function describe(err) {
  const id = err?.requestId ? ` (request ${err.requestId})` : '';
  if (err instanceof RateLimitError) {
    const wait = err.retryAfter === null ? '' : ` Try again in ${Math.max(1, Math.ceil(err.retryAfter))} s.`;
    return `Rate limit reached: ${err.message}${wait}${id}`;
  }
  if (err instanceof AuthenticationError) {
    if (err.code === 'not_signed_in') return 'Sign in first.';
    if (err.code === 'invalid_app_check_token') return `App Check refused this app: ${err.message}${id}`;
    const challenge = err.headers?.get('www-authenticate') ?? '';
    if (/invalid_token/.test(challenge) || !err.headers) {
      return `Your sign-in was refused even after a refresh; please sign in again. (${err.message})${id}`;
    }
    return `Your saved provider key was rejected by the provider: save a valid key or delete it to use Workers AI. (${err.message})${id}`;
  }
  if (err instanceof StreamError) return `The answer broke off: ${err.message}${id}`;
  if (err instanceof InternalServerError) {
    const retry = err.headers?.get('retry-after');
    const again = retry ? ` Try again in ${retry} s.` : ' Try again in a moment.';
    if (err.status === 502) return `The AI provider failed (502): ${err.message}${again}${id}`;
    if (err.status === 503) return `The service is temporarily unavailable (503): ${err.message}${again}${id}`;
    if (err.status === 504) return `The AI provider took too long (504): ${err.message}${again}${id}`;
    return `Server error (${err.status}): ${err.message}${id}`;
  }
  if (err instanceof APIConnectionError) {
    return (
      `Cannot reach the gateway at ${config.gatewayUrl}: the server is down, or it does not allow ` +
      `this page's origin (${location.origin}) in BRIDGE_CORS_ORIGINS.`
    );
  }
  if (err instanceof Native1APIError) {
    return `${err.status ? `Error ${err.status}: ` : ''}${err.message}${id}`;
  }
  if (err?.code?.startsWith?.('auth/')) return `Firebase sign-in failed: ${err.code.slice(5).replaceAll('-', ' ')}.`;
  return `Unexpected error: ${err?.message ?? err}`;
}

function showError(err) {
  const box = $('error');
  box.textContent = typeof err === 'string' ? err : describe(err);
  box.hidden = false;
}

function clearMessages() {
  $('error').hidden = true;
  $('notice').hidden = true;
}

function showNotice(text) {
  $('notice').textContent = text;
  $('notice').hidden = false;
}

function setStatus(text) {
  $('status').textContent = text;
}

/** Fill a <dl> with [term, value] rows (textContent only: server text is never HTML). */
function fillList(list, rows) {
  list.replaceChildren();
  for (const [term, value] of rows) {
    const dt = document.createElement('dt');
    dt.textContent = term;
    const dd = document.createElement('dd');
    dd.textContent = value;
    list.append(dt, dd);
  }
}

// ------------------------------------------------------------------------------------------
// Account
// ------------------------------------------------------------------------------------------

async function withButtons(action) {
  clearMessages();
  const buttons = document.querySelectorAll('#account button');
  buttons.forEach((b) => (b.disabled = true));
  try {
    await action();
  } catch (err) {
    showError(err);
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

$('auth-form').addEventListener('submit', (event) => {
  event.preventDefault();
  withButtons(() => signInWithEmailAndPassword(auth, $('email').value, $('password').value));
});
$('sign-up').addEventListener('click', () => {
  if (!$('auth-form').reportValidity()) return;
  withButtons(() => createUserWithEmailAndPassword(auth, $('email').value, $('password').value));
});
$('sign-in-anon').addEventListener('click', () => withButtons(() => signInAnonymously(auth)));
$('sign-out').addEventListener('click', () => withButtons(() => signOut(auth)));

onAuthStateChanged(auth, async (user) => {
  $('auth-form').hidden = Boolean(user);
  $('signed-in').hidden = !user;
  $('vault').hidden = !user;
  $('limits').hidden = !user;
  for (const id of ['prompt', 'send', 'model']) $(id).disabled = !user;
  if (!user) {
    // Nothing of one user's conversation may reach the next user's requests.
    controller?.abort();
    history.length = 0;
    $('transcript').replaceChildren();
    setStatus('Sign in to chat.');
    return;
  }
  $('user').textContent = user.isAnonymous ? `anonymous user ${user.uid.slice(0, 8)}…` : user.email;
  // One after the other: if the token needs a refresh, the first call does it for the others.
  try {
    await refreshVault();
    await refreshModels();
    await refreshUsage();
    setStatus('Ready.');
  } catch (err) {
    showError(err);
    setStatus('');
  }
});

// ------------------------------------------------------------------------------------------
// Vault: the user's own provider key
// ------------------------------------------------------------------------------------------

function showVault(status) {
  $('vault-status').textContent = status.exists
    ? `${PROVIDER_NAMES[status.provider] ?? status.provider} key saved: your requests run on ${PROVIDER_NAMES[status.provider] ?? status.provider} with it.`
    : 'No key saved: your requests run on Workers AI.';
  $('vault-status').dataset.provider = status.exists ? status.provider : 'workers-ai';
  $('vault-delete').disabled = !status.exists;
}

async function refreshVault() {
  showVault(await client.vault.exists());
}

$('vault-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  clearMessages();
  const input = $('vault-key');
  const key = input.value.trim();
  input.value = ''; // never keep the key in the page longer than needed
  try {
    showVault(await client.vault.put(key));
    await refreshModels();
  } catch (err) {
    showError(err);
  }
});

$('vault-delete').addEventListener('click', async () => {
  clearMessages();
  try {
    showVault(await client.vault.delete());
    await refreshModels();
  } catch (err) {
    showError(err);
  }
});

// ------------------------------------------------------------------------------------------
// Models, limits, usage
// ------------------------------------------------------------------------------------------

async function refreshModels() {
  const select = $('model');
  const previous = select.value;
  const models = await client.models.list();
  select.replaceChildren(
    ...models.map((model) => {
      const option = document.createElement('option');
      option.value = option.textContent = model.id;
      return option;
    }),
  );
  const ids = models.map((m) => m.id);
  select.value = [previous, config.defaultModel, ids[0]].find((id) => id && ids.includes(id)) ?? '';
}

const number = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : String(n ?? '?'));
const plural = (n, word) => `${number(n)} ${word}${n === 1 ? '' : 's'}`;

function formatLimit(remaining, limit, reset) {
  if (limit === null) return 'no limit';
  return `${number(remaining)} of ${number(limit)} left` + (reset ? `, full again in ${reset}` : '');
}

function showRateLimit(state) {
  const rows = [];
  if (state.limitRequests !== null) {
    rows.push(['Requests', formatLimit(state.remainingRequests, state.limitRequests, state.resetRequests)]);
  }
  if (state.limitTokens !== null) {
    rows.push(['Tokens today', formatLimit(state.remainingTokens, state.limitTokens, state.resetTokens)]);
  }
  fillList($('ratelimit'), rows.length ? rows : [['Last answer', 'no limits apply']]);
}

async function refreshUsage() {
  let report;
  try {
    report = await client.usage.retrieve();
  } catch (err) {
    if (err instanceof Native1APIError && err.status === 404) return; // a gateway without /v1/usage
    throw err;
  }
  const today = report.today ?? {};
  const rows = [['Tier', report.tier]];
  const limit = (name) => report.limits?.[name];
  const remaining = (name) => report.remaining?.[name];
  if (limit('requests_per_minute') != null) {
    rows.push(['Per minute', `${number(remaining('requests_per_minute'))} of ${plural(limit('requests_per_minute'), 'request')} left`]);
  }
  if (limit('tokens_per_day') != null) {
    rows.push(['Per day', `${number(remaining('tokens_per_day'))} of ${plural(limit('tokens_per_day'), 'token')} left`]);
  }
  if (limit('max_concurrent_requests') != null) {
    rows.push(['At once', `${number(report.in_flight)} of ${number(limit('max_concurrent_requests'))} in flight`]);
  }
  rows.push(['Today', `${plural(today.requests ?? 0, 'request')}, ${plural(today.total_tokens ?? 0, 'token')}`]);
  fillList($('usage'), rows);
}

// ------------------------------------------------------------------------------------------
// Chat
// ------------------------------------------------------------------------------------------


function addMessage(role, text) {
  const item = document.createElement('li');
  item.className = role;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  const meta = document.createElement('span');
  meta.className = 'meta';
  item.append(body, meta);
  $('transcript').append(item);
  return item;
}

function setStreaming(on) {
  $('send').disabled = on;
  $('prompt').disabled = on;
  $('stop').disabled = !on;
}

$('stop').addEventListener('click', () => controller?.abort());

$('chat-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const prompt = $('prompt').value.trim();
  if (!prompt || controller) return;
  clearMessages();
  $('prompt').value = '';
  addMessage('user', prompt);
  const answer = addMessage('assistant', '');
  const text = answer.querySelector('.text');
  const meta = answer.querySelector('.meta');
  answer.dataset.state = 'streaming';
  history.push({ role: 'user', content: prompt });
  controller = new AbortController();
  setStreaming(true);
  setStatus('Waiting for the first token…');
  try {
    const stream = await client.chat.completions.create(
      { model: $('model').value, messages: history, stream: true, stream_options: { include_usage: true } },
      { signal: controller.signal },
    );
    answer.dataset.provider = stream.provider ?? '';
    meta.textContent = `${$('model').value} on ${PROVIDER_NAMES[stream.provider] ?? stream.provider}`;
    showRateLimit(stream.rateLimit);
    setStatus('Streaming…');
    let usage = null;
    for await (const chunk of stream) {
      // Each token goes into the page as it arrives.
      text.textContent += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    answer.dataset.state = 'done';
    history.push({ role: 'assistant', content: text.textContent });
    if (usage) meta.textContent += ` · ${plural(usage.total_tokens, 'token')}`;
    setStatus('Done.');
  } catch (err) {
    if (err instanceof APIUserAbortError) {
      // The user pressed Stop: the request is cancelled all the way to the provider.
      answer.dataset.state = 'stopped';
      meta.textContent += (meta.textContent ? ' · ' : '') + 'stopped';
      if (text.textContent) history.push({ role: 'assistant', content: text.textContent });
      else history.pop();
      setStatus('Stopped.');
    } else {
      answer.dataset.state = 'error';
      history.pop();
      if (!text.textContent) answer.remove();
      showError(err);
      setStatus('');
    }
  } finally {
    controller = null;
    setStreaming(false);
    $('prompt').focus();
  }
  refreshUsage().catch(() => {}); // best effort: the answer is what matters
});

setStatus('Sign in to chat.');
document.body.dataset.ready = 'true';
