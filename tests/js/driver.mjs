// Test driver: runs REAL, unmodified Pusher JS clients (pusher-js 8.x and 7.x, laravel-echo)
// and the Node `pusher` server SDK, controlled by a parent process (pytest) over JSON lines.
//
// Protocol
//   stdin : one JSON object per line: {"id": <int>, "cmd": "<name>", ...args}
//   stdout: one JSON object per line: {"id": <int>, "ok": true, "result": <any>}
//                                  or {"id": <int>, "ok": false, "error": "<message>"}
// Nothing else is ever written to stdout (console.log is redirected to stderr). Commands run
// concurrently: a pending `wait` never blocks reading the next line.
//
// Each named client keeps an append-only event log. Every entry carries `i` (a sequence number
// that keeps growing even across `clear`, usable as `since`) and `t` (Date.now()). Entry types:
//   {type:'state', previous, current}            connection state changes
//   {type:'conn_error', error}                   pusher.connection.bind('error')
//   {type:'global', event, data}                 pusher.bind_global
//   {type:'channel', channel, event, data[, user_id]}  channel.bind_global (user_id for client
//                                                events on presence channels, taken from the frame)
//   {type:'user', event, data}                   pusher.user.bind_global (server-to-user events,
//                                                pusher:signin_error)
//   {type:'watchlist', event, data}              pusher.user.watchlist online/offline
//   {type:'message', event, channel, data, user_id}  every raw frame (only with log_raw: true)
//   {type:'here'|'joining'|'leaving'|'echo_error'|'whisper'|'echo_event', ...}  laravel-echo
//
// Commands (`client` names a driver-side client; `timeout` is in ms, also accepted as
// `timeout_ms`):
//   connect {client, version:'8'|'7', key, host, port, secret, app_id, options, log_raw,
//            sdk_options, http_port, connect_timeout, resume_snippet}   -> {socket_id}
//     (resume_snippet: install docs/history.md's anonymous catch-up snippet before connecting)
//   set_presence {client, user_id, user_info, from_signin}   set_user {client, user_data}
//     (from_signin: the authorizer returns no channel_data; the member is the signed-in user)
//   set_auth_mode {client, mode:'ok'|'bad_signature'|'fail'}
//   subscribe {client, channel, timeout}        -> {succeeded, data} | {succeeded:false, timeout}
//   unsubscribe {client, channel}               members {client, channel} -> {count, me, members}
//   client_event {client, channel, event, data} -> channel.trigger()'s boolean
//   signin {client, wait?, timeout}             disconnect {client}
//   state {client} -> {state, socket_id, next_index}   mark {client} -> next log index
//   events {client, since}   clear {client}   wait {client, match, count, since, timeout}
//   sdk {method, args, app_id, key, secret, host, port, sdk_options}
//   echo_connect {client, key, host, port, secret, app_id, user_id, user_info, version}
//   echo_join / echo_private / echo_leave {client, name}
//   echo_listen_whisper {client, name, event, private_or_presence}
//   echo_whisper {client, name, event, data, kind}   echo_listen {client, kind, name, event}
//   close_all   exit
// Set JSDRIVER_DEBUG=1 to get pusher-js' own debug log on stderr.

import readline from 'node:readline';

import Echo from 'laravel-echo';
import PusherServer from 'pusher';
import Pusher8 from 'pusher-js';
import Pusher7 from 'pusher-js-7';

// ---------------------------------------------------------------------------------------------
// stdout hygiene: only protocol replies go to stdout.
// ---------------------------------------------------------------------------------------------
const toStderr = (...args) => console.error(...args);
console.log = toStderr;
console.info = toStderr;
console.debug = toStderr;

const log = (...args) => console.error('[jsdriver]', ...args);

/**
 * The Node build exports a runtime subclass; static state (`isReady`, `log`, `instances`) lives
 * on the core Pusher class it extends, so find the class that owns it.
 */
function pusherCore(PusherCls) {
  let cls = PusherCls;
  while (cls && !Object.hasOwn(cls, 'isReady')) cls = Object.getPrototypeOf(cls);
  return cls ?? PusherCls;
}

if (process.env.JSDRIVER_DEBUG) {
  pusherCore(Pusher8).log = (msg) => process.stderr.write(`[pusher-js 8] ${msg}\n`);
  pusherCore(Pusher7).log = (msg) => process.stderr.write(`[pusher-js 7] ${msg}\n`);
}

process.on('unhandledRejection', (err) => log('unhandled rejection:', err));
process.on('uncaughtException', (err) => log('uncaught exception:', err));

/**
 * The anonymous catch-up snippet of docs/history.md, verbatim: the resume token is read from
 * `pusher_internal:resume_token` and sent back with `pusher:resume` on the next connection,
 * before pusher-js re-subscribes.
 */
function installResumeSnippet(pusher) {
  let resumeToken = null;
  pusher.connection.bind('message', (message) => {
    if (message.event === 'pusher_internal:resume_token') resumeToken = message.data.token;
  });
  pusher.connection.bind('state_change', ({ current }) => {
    if (current === 'connected' && resumeToken) {
      pusher.send_event('pusher:resume', { token: resumeToken });
    }
  });
}

function reply(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------
const DEFAULT_WAIT_MS = 5000;
const CONNECT_TIMEOUT_MS = 10000;

/** Deep-copies `value` into plain JSON data: no cycles, functions or class instances left. */
function toPlain(value, depth = 0, seen = new WeakSet()) {
  if (value === null || value === undefined) return null;
  const t = typeof value;
  if (t === 'string' || t === 'boolean') return value;
  if (t === 'number') return Number.isFinite(value) ? value : String(value);
  if (t === 'bigint') return value.toString();
  if (t === 'function' || t === 'symbol') return undefined;
  if (value instanceof Date) return value.toISOString();
  if (depth > 8) return '[MaxDepth]';
  if (seen.has(value)) return '[Circular]';
  seen.add(value);
  try {
    if (value instanceof Error) {
      const out = { name: value.name, message: value.message };
      for (const k of Object.keys(value)) {
        if (k !== 'stack') out[k] = toPlain(value[k], depth + 1, seen);
      }
      return out;
    }
    if (Array.isArray(value)) return value.map((v) => toPlain(v, depth + 1, seen) ?? null);
    const out = {};
    for (const k of Object.keys(value)) {
      const v = toPlain(value[k], depth + 1, seen);
      if (v !== undefined) out[k] = v;
    }
    return out;
  } finally {
    seen.delete(value);
  }
}

/** Describes a pusher-js connection error: {type, data?, error?} with the cause as text. */
function describeConnError(err) {
  if (!err || typeof err !== 'object') return { error: String(err) };
  const out = {};
  if (err.type !== undefined) out.type = String(err.type);
  if (err.data !== undefined) out.data = toPlain(err.data);
  if (err.error !== undefined) {
    const e = err.error;
    // WebSocket errors wrap big emitter objects; keep only what explains the failure.
    out.error =
      e && typeof e === 'object'
        ? String(e.message ?? e.error?.message ?? e.type ?? e.code ?? 'error')
        : String(e);
  }
  if (err.message !== undefined && out.error === undefined) out.error = String(err.message);
  return out;
}

function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
}

function matches(entry, match) {
  return Object.entries(match ?? {}).every(([k, v]) => deepEqual(entry[k], v));
}

function errorMessage(err) {
  if (err instanceof Error) return err.message || String(err);
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(toPlain(err));
  } catch {
    return String(err);
  }
}

/** Parses a JSON string when possible, otherwise returns it unchanged. */
function maybeJson(text) {
  if (typeof text !== 'string') return text ?? null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function makeSdk({ app_id = 'app-id', key = 'app-key', secret = 'app-secret', host, port,
  useTLS = false, sdk_options = {} } = {}) {
  return new PusherServer({
    appId: String(app_id), key, secret, host: host ?? '127.0.0.1', port, useTLS, ...sdk_options,
  });
}

// ---------------------------------------------------------------------------------------------
// Clients and their logs
// ---------------------------------------------------------------------------------------------
/** @type {Map<string, Client>} */
const clients = new Map();

class Client {
  constructor(name, creds) {
    this.name = name;
    this.creds = creds; // {app_id, key, secret, host, port, sdk_options}
    this.log = [];
    this.seq = 0; // next log sequence number
    this.waiters = new Set();
    this.presence = { user_id: name, user_info: undefined };
    this.userData = { id: name };
    this.authMode = 'ok';
    this.pusher = null;
    this.echo = null;
    this.loggedChannels = new WeakSet();
    this.echoJoined = new Set();
    this.sdk = makeSdk(creds);
    // Same credentials but a wrong secret: produces well-formed but invalid signatures.
    this.badSdk = makeSdk({ ...creds, secret: `${creds.secret ?? 'app-secret'}-wrong` });
  }

  push(entry) {
    const full = { ...toPlain(entry), i: this.seq++, t: Date.now() };
    this.log.push(full);
    this.notify();
    return full;
  }

  notify() {
    for (const w of [...this.waiters]) w.check();
  }

  entriesSince(since) {
    return since ? this.log.filter((e) => e.i >= since) : this.log;
  }

  tail(n = 15) {
    return JSON.stringify(this.log.slice(-n)).slice(-4000);
  }

  /**
   * Channel authorization shared by pusher-js 8 / 7 and Echo (callback style: cb(err, data)).
   * The callback is always deferred, as with a real HTTP auth endpoint: pusher-js emits
   * pusher:subscription_error synchronously from the callback, and a synchronous failure would
   * fire inside pusher.subscribe(), before the driver could bind its listeners.
   */
  authorizeChannel(socketId, channelName, callback) {
    const cb = (err, data) => setImmediate(() => callback(err, data));
    if (this.authMode === 'fail') {
      cb(new Error(`authorization refused by test (client ${this.name})`), null);
      return;
    }
    try {
      const sdk = this.authMode === 'bad_signature' ? this.badSdk : this.sdk;
      // user_id keeps the type the test gave (Laravel apps commonly send integer ids).
      // fromSignin: no channel_data, so pusher-js >= 7.4 joins as the signed-in user.
      const data = channelName.startsWith('presence-') && !this.presence.fromSignin
        ? { user_id: this.presence.user_id, user_info: this.presence.user_info }
        : undefined;
      if (data && data.user_info === undefined) delete data.user_info;
      cb(null, sdk.authorizeChannel(socketId, channelName, data));
    } catch (err) {
      cb(err instanceof Error ? err : new Error(String(err)), null);
    }
  }

  authenticateUser(socketId, callback) {
    const cb = (err, data) => setImmediate(() => callback(err, data));
    if (this.authMode === 'fail') {
      cb(new Error(`user authentication refused by test (client ${this.name})`), null);
      return;
    }
    try {
      const sdk = this.authMode === 'bad_signature' ? this.badSdk : this.sdk;
      cb(null, sdk.authenticateUser(socketId, this.userData));
    } catch (err) {
      cb(err instanceof Error ? err : new Error(String(err)), null);
    }
  }

  /** Hooks all logging onto a freshly created pusher-js instance. */
  attach(pusher, { logRaw = false } = {}) {
    this.pusher = pusher;
    const conn = pusher.connection;
    conn.bind('state_change', ({ previous, current }) =>
      this.push({ type: 'state', previous, current }));
    conn.bind('error', (err) => this.push({ type: 'conn_error', error: describeConnError(err) }));
    pusher.bind_global((event, data) => this.push({ type: 'global', event, data }));
    if (pusher.user && typeof pusher.user.bind_global === 'function') {
      pusher.user.bind_global((event, data) => this.push({ type: 'user', event, data }));
      const wl = pusher.user.watchlist;
      if (wl && typeof wl.bind === 'function') {
        for (const event of ['online', 'offline']) {
          wl.bind(event, (data) => this.push({ type: 'watchlist', event, data }));
        }
      }
    }
    // Channel.bind_global does not pass the frame's user_id (presence client events), so
    // patch it into the entry logged just before. This listener runs after pusher-js' own
    // 'message' listener (bound in the Pusher constructor) has dispatched to the channel.
    conn.bind('message', (msg) => {
      // pusher-js creates the #server-to-user-<id> channel while handling signin_success
      // (its listener runs before this one); log that channel too, so tests can see when
      // it is subscribed (only then do sendToUser events reach this client).
      if (msg.event === 'pusher:signin_success' && pusher.user?.serverToUserChannel) {
        this.logChannel(pusher.user.serverToUserChannel);
      }
      if (logRaw) {
        this.push({ type: 'message', event: msg.event, channel: msg.channel ?? null,
          data: msg.data, user_id: msg.user_id ?? null });
      }
      if (msg.user_id !== undefined && msg.channel) {
        for (let k = this.log.length - 1; k >= 0 && k >= this.log.length - 5; k--) {
          const e = this.log[k];
          if (e.type === 'channel' && e.channel === msg.channel && e.event === msg.event
              && e.user_id === undefined) {
            e.user_id = msg.user_id;
            this.notify();
            break;
          }
        }
      }
    });
  }

  /** Logs everything a channel emits (once per channel object). */
  logChannel(channel) {
    if (!channel || this.loggedChannels.has(channel)) return;
    this.loggedChannels.add(channel);
    const name = channel.name;
    channel.bind_global((event, data) => this.push({ type: 'channel', channel: name, event, data }));
  }

  /** Waits until `count` log entries match `match`; resolves with those entries. */
  waitFor(match, { count = 1, timeout = DEFAULT_WAIT_MS, since = 0 } = {}) {
    return new Promise((resolve, reject) => {
      const waiter = {
        check: () => {
          const found = this.entriesSince(since).filter((e) => matches(e, match));
          if (found.length >= count) {
            this.waiters.delete(waiter);
            clearTimeout(timer);
            resolve(found.slice(0, count));
          }
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        const have = this.entriesSince(since).filter((e) => matches(e, match)).length;
        reject(new Error(`wait timed out after ${timeout} ms on client ${this.name} for `
          + `${JSON.stringify(match)} (count ${count}, matched ${have}); log tail: ${this.tail()}`));
      }, timeout);
      this.waiters.add(waiter);
      waiter.check();
    });
  }

  /** Resolves with {socket_id} once connected; rejects on failed/unavailable/refused/timeout. */
  awaitConnected(timeout = CONNECT_TIMEOUT_MS) {
    const conn = this.pusher.connection;
    if (conn.state === 'connected') return Promise.resolve({ socket_id: conn.socket_id });
    return new Promise((resolve, reject) => {
      const done = (fn, arg) => {
        clearTimeout(timer);
        conn.unbind('state_change', onChange);
        fn(arg);
      };
      const fail = (why) => {
        const errors = this.log.filter((e) => e.type === 'conn_error').slice(-3);
        done(reject, new Error(`connect ${this.name}: ${why}; errors: ${JSON.stringify(errors)}`));
      };
      const onChange = ({ previous, current }) => {
        if (current === 'connected') done(resolve, { socket_id: conn.socket_id });
        else if (current === 'failed' || current === 'unavailable') fail(`state ${current}`);
        // pusher-js goes connecting -> disconnected when the server refuses (4000-4099 codes).
        else if (current === 'disconnected' && previous === 'connecting') fail('refused');
      };
      const timer = setTimeout(() => fail(`timed out after ${timeout} ms (state ${conn.state})`),
        timeout);
      conn.bind('state_change', onChange);
    });
  }

  disconnectNow() {
    try {
      this.echo ? this.echo.disconnect() : this.pusher?.disconnect();
    } catch (err) {
      log(`disconnect ${this.name} failed:`, err);
    }
  }
}

function getClient(name) {
  const c = clients.get(name);
  if (!c) throw new Error(`unknown client ${JSON.stringify(name)}`);
  return c;
}

function getPusherChannel(c, name) {
  const ch = c.pusher?.channel(name);
  if (!ch) throw new Error(`client ${c.name} has no channel ${JSON.stringify(name)}`);
  return ch;
}

/** Waits for pusher:subscription_succeeded / _error on a pusher-js channel. */
function awaitSubscription(channel, timeout = DEFAULT_WAIT_MS) {
  if (channel.subscribed) return Promise.resolve({ succeeded: true, data: null, already: true });
  return new Promise((resolve) => {
    const finish = (result) => {
      clearTimeout(timer);
      channel.unbind('pusher:subscription_succeeded', onOk);
      channel.unbind('pusher:subscription_error', onErr);
      resolve(toPlain(result));
    };
    const onOk = (data) => finish({ succeeded: true, data });
    const onErr = (data) => finish({ succeeded: false, data });
    const timer = setTimeout(() => finish({ succeeded: false, timeout: true }), timeout);
    channel.bind('pusher:subscription_succeeded', onOk);
    channel.bind('pusher:subscription_error', onErr);
  });
}

/**
 * Constructs a pusher-js client without letting it connect yet, so that `attach` sees the
 * very first state change (initialized -> connecting). The constructor connects right away
 * when the static `isReady` flag is set (always, under Node); clear it just for the call.
 */
function constructQuiet(construct, PusherCls) {
  const core = pusherCore(PusherCls);
  const wasReady = core.isReady;
  core.isReady = false;
  try {
    return construct();
  } finally {
    core.isReady = wasReady;
  }
}

/** Replaces (and disconnects) any previous client of the same name. */
function newClient(name, creds) {
  if (typeof name !== 'string' || !name) throw new Error('client name required');
  const old = clients.get(name);
  if (old) old.disconnectNow();
  const c = new Client(name, creds);
  clients.set(name, c);
  return c;
}

function credsFrom(args) {
  return {
    app_id: args.app_id ?? 'app-id',
    key: args.key ?? 'app-key',
    secret: args.secret ?? 'app-secret',
    host: args.host ?? '127.0.0.1',
    // The SDK talks HTTP to the same server; allow an explicit HTTP port if it differs.
    port: args.http_port ?? args.port,
    sdk_options: args.sdk_options ?? {},
  };
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------
const commands = {
  async connect(args) {
    const { client, version = '8', host = '127.0.0.1', port, log_raw: logRaw = false } = args;
    if (!port) throw new Error('port required');
    const options = { ...(args.options ?? {}) };
    if (options.insecure) process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
    delete options.insecure;
    const c = newClient(client, credsFrom(args));

    const auth = String(version) === '7'
      ? {
        // 7.x: exercise the deprecated `authorizer` path (still supported by 7.6).
        authorizer: (channel) => ({
          authorize: (socketId, cb) => c.authorizeChannel(socketId, channel.name, cb),
        }),
        userAuthentication: {
          customHandler: ({ socketId }, cb) => c.authenticateUser(socketId, cb),
        },
      }
      : {
        channelAuthorization: {
          customHandler: ({ socketId, channelName }, cb) =>
            c.authorizeChannel(socketId, channelName, cb),
        },
        userAuthentication: {
          customHandler: ({ socketId }, cb) => c.authenticateUser(socketId, cb),
        },
      };
    const PusherCls = String(version) === '7' ? Pusher7 : Pusher8;
    if (String(version) !== '7' && String(version) !== '8') {
      throw new Error(`unsupported pusher-js version ${version}`);
    }
    const opts = {
      cluster: 'mt1',
      wsHost: host,
      wsPort: port,
      wssPort: port,
      forceTLS: false,
      enabledTransports: options.forceTLS ? ['ws', 'wss'] : ['ws'],
      disableStats: true,
      ...auth,
      ...options,
    };
    const pusher = constructQuiet(() => new PusherCls(args.key ?? 'app-key', opts), PusherCls);
    c.attach(pusher, { logRaw });
    if (args.resume_snippet) installResumeSnippet(pusher);
    pusher.connect();
    return c.awaitConnected(args.connect_timeout ?? CONNECT_TIMEOUT_MS);
  },

  async set_presence({ client, user_id, user_info, from_signin }) {
    const c = getClient(client);
    c.presence = { user_id: user_id ?? client, user_info, fromSignin: !!from_signin };
    return null;
  },

  async set_user({ client, user_data }) {
    if (!user_data || typeof user_data !== 'object') throw new Error('user_data object required');
    getClient(client).userData = user_data;
    return null;
  },

  async set_auth_mode({ client, mode }) {
    if (!['ok', 'bad_signature', 'fail'].includes(mode)) throw new Error(`bad mode ${mode}`);
    getClient(client).authMode = mode;
    return null;
  },

  async subscribe({ client, channel, timeout = DEFAULT_WAIT_MS }) {
    const c = getClient(client);
    const ch = c.pusher.subscribe(channel);
    c.logChannel(ch);
    return awaitSubscription(ch, timeout);
  },

  async unsubscribe({ client, channel }) {
    getClient(client).pusher.unsubscribe(channel);
    return null;
  },

  async members({ client, channel }) {
    const ch = getPusherChannel(getClient(client), channel);
    if (!ch.members) throw new Error(`${channel} is not a presence channel`);
    const m = ch.members;
    return toPlain({ count: m.count, me: m.me, members: m.members });
  },

  async client_event({ client, channel, event, data }) {
    return getPusherChannel(getClient(client), channel).trigger(event, data ?? {});
  },

  /**
   * pusher.signin(). Resolves at once, or with `wait: true` once the #server-to-user-<id>
   * channel is subscribed (result: that log entry); errors on signin failure or timeout.
   */
  async signin({ client, wait = false, timeout = DEFAULT_WAIT_MS }) {
    const c = getClient(client);
    const since = c.seq;
    c.pusher.signin();
    if (!wait) return null;
    const channel = `#server-to-user-${c.userData.id}`;
    const ok = c.waitFor({ type: 'channel', channel, event: 'pusher:subscription_succeeded' },
      { since, timeout });
    // Client-side failure (auth handler error) or the server's pusher:error reply.
    const failed = c.waitFor({ type: 'user', event: 'pusher:signin_error' }, { since, timeout });
    const rejected = c.waitFor({ type: 'global', event: 'pusher:error' }, { since, timeout });
    for (const p of [ok, failed, rejected]) p.catch(() => {});
    const [entry] = await Promise.race([ok, failed, rejected]);
    if (entry.type !== 'channel') {
      throw new Error(`signin failed: ${entry.event} ${JSON.stringify(entry.data)}`);
    }
    return entry;
  },

  async disconnect({ client, timeout = 2000 }) {
    const c = getClient(client);
    c.disconnectNow();
    const conn = c.pusher?.connection;
    if (!conn || conn.state === 'disconnected') return null;
    // Give pusher-js a moment to report the final state so the log is complete.
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, timeout);
      conn.bind('state_change', ({ current }) => {
        if (current === 'disconnected') {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    return null;
  },

  async state({ client }) {
    const c = getClient(client);
    const conn = c.pusher.connection;
    return { state: conn.state, socket_id: conn.socket_id ?? null, next_index: c.seq };
  },

  async events({ client, since = 0 }) {
    return getClient(client).entriesSince(since);
  },

  /** Sequence number of the next log entry; pass it as `since` to ignore older entries. */
  async mark({ client }) {
    return getClient(client).seq;
  },

  async clear({ client }) {
    getClient(client).log.length = 0;
    return null;
  },

  async wait({ client, match = {}, timeout = DEFAULT_WAIT_MS, count = 1, since = 0 }) {
    return getClient(client).waitFor(match, { count, timeout, since });
  },

  async sdk(args) {
    const { method, args: callArgs = [] } = args;
    const sdk = makeSdk({ ...args, host: args.host ?? '127.0.0.1' });
    if (typeof sdk[method] !== 'function') throw new Error(`unknown SDK method ${method}`);
    if (method === 'webhook') {
      const wh = sdk.webhook(callArgs[0]);
      const valid = wh.isValid();
      let events = null;
      let time = null;
      let timeMs = null;
      try {
        events = wh.getEvents?.() ?? null;
        const d = wh.getTime?.();
        time = d ? d.toISOString() : null;
        timeMs = d ? d.getTime() : null;
      } catch {
        // invalid body: getEvents/getTime throw WebHookError; leave them null
      }
      return toPlain({ valid, events, time, time_ms: timeMs });
    }
    let result;
    try {
      result = await sdk[method](...callArgs);
    } catch (err) {
      if (err instanceof PusherServer.RequestError || err?.name === 'PusherRequestError') {
        return {
          status: err.status ?? null,
          body: maybeJson(err.body),
          error: err.message,
          cause: err.error ? errorMessage(err.error) : null,
        };
      }
      throw err;
    }
    // fetch-like Response (node-fetch)
    if (result && typeof result === 'object' && typeof result.text === 'function'
        && 'status' in result) {
      return { status: result.status, body: maybeJson(await result.text()) };
    }
    return toPlain(result);
  },

  // -------------------------------------------------------------------------------------------
  // Laravel Echo
  // -------------------------------------------------------------------------------------------
  async echo_connect(args) {
    const { client, host = '127.0.0.1', port, version = '8', log_raw: logRaw = false } = args;
    if (!port) throw new Error('port required');
    const c = newClient(client, credsFrom(args));
    c.presence = { user_id: args.user_id ?? client, user_info: args.user_info };
    const PusherCls = String(version) === '7' ? Pusher7 : Pusher8;
    const echo = constructQuiet(() => new Echo({
      broadcaster: 'pusher',
      key: args.key ?? 'app-key',
      cluster: 'mt1',
      wsHost: host,
      wsPort: port,
      wssPort: port,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      Pusher: PusherCls,
      authorizer: (channel) => ({
        authorize: (socketId, cb) => c.authorizeChannel(socketId, channel.name, cb),
      }),
      ...(args.options ?? {}),
    }), PusherCls);
    c.echo = echo;
    c.attach(echo.connector.pusher, { logRaw });
    echo.connector.pusher.connect();
    return c.awaitConnected(args.connect_timeout ?? CONNECT_TIMEOUT_MS);
  },

  async echo_join({ client, name, timeout = DEFAULT_WAIT_MS }) {
    const c = getClient(client);
    if (!c.echo) throw new Error(`client ${client} is not an Echo client`);
    const full = `presence-${name}`;
    const ch = c.echo.join(name);
    const pch = c.pusher.channel(full);
    c.logChannel(pch);
    const since = c.seq;
    if (!c.echoJoined.has(full)) {
      c.echoJoined.add(full);
      ch.here((users) => c.push({ type: 'here', channel: full, users }))
        .joining((user) => c.push({ type: 'joining', channel: full, user }))
        .leaving((user) => c.push({ type: 'leaving', channel: full, user }))
        .error((error) => c.push({ type: 'echo_error', channel: full, error }));
      // Joined earlier through echo_listen etc.: `here` already fired before we bound it.
      if (pch?.subscribed) {
        const users = Object.values(pch.members.members);
        return [c.push({ type: 'here', channel: full, users })];
      }
    }
    const hereWait = c.waitFor({ type: 'here', channel: full }, { since, timeout });
    const errWait = c.waitFor({ type: 'echo_error', channel: full }, { since, timeout });
    // Whichever loses the race rejects later on its own timeout; keep that quiet.
    hereWait.catch(() => {});
    errWait.catch(() => {});
    const first = await Promise.race([hereWait, errWait]);
    if (first[0].type === 'echo_error') {
      throw new Error(`echo_join ${full} failed: ${JSON.stringify(first[0].error)}`);
    }
    return first;
  },

  async echo_leave({ client, name }) {
    const c = getClient(client);
    c.echo.leave(name);
    for (const prefix of ['', 'private-', 'private-encrypted-', 'presence-']) {
      c.echoJoined.delete(prefix + name);
    }
    return null;
  },

  async echo_private({ client, name, timeout = DEFAULT_WAIT_MS }) {
    const c = getClient(client);
    const full = `private-${name}`;
    const ch = c.echo.private(name);
    if (!c.echoJoined.has(full)) {
      c.echoJoined.add(full);
      ch.error((error) => c.push({ type: 'echo_error', channel: full, error }));
    }
    const pch = c.pusher.channel(full);
    c.logChannel(pch);
    return awaitSubscription(pch, timeout);
  },

  async echo_listen_whisper({ client, name, event, private_or_presence, kind }) {
    const c = getClient(client);
    const k = private_or_presence ?? kind ?? 'private';
    const ch = k === 'presence' ? c.echo.join(name) : c.echo.private(name);
    c.logChannel(c.pusher.channel(`${k}-${name}`));
    ch.listenForWhisper(event, (e) =>
      c.push({ type: 'whisper', channel: `${k}-${name}`, event, data: e }));
    return null;
  },

  async echo_whisper({ client, name, event, data, kind = 'private' }) {
    const c = getClient(client);
    const ch = kind === 'presence' ? c.echo.join(name) : c.echo.private(name);
    ch.whisper(event, data ?? {});
    return null;
  },

  async echo_listen({ client, kind = 'channel', name, event, timeout = DEFAULT_WAIT_MS }) {
    const c = getClient(client);
    let ch;
    let full;
    if (kind === 'channel') [ch, full] = [c.echo.channel(name), name];
    else if (kind === 'private') [ch, full] = [c.echo.private(name), `private-${name}`];
    else if (kind === 'presence') [ch, full] = [c.echo.join(name), `presence-${name}`];
    else throw new Error(`bad kind ${kind}`);
    ch.listen(event, (e) => c.push({ type: 'echo_event', channel: full, event, data: e }));
    const pch = c.pusher.channel(full);
    c.logChannel(pch);
    // Resolve once subscribed so the test can publish right away without racing.
    return awaitSubscription(pch, timeout);
  },

  // -------------------------------------------------------------------------------------------
  async close_all() {
    for (const c of clients.values()) c.disconnectNow();
    clients.clear();
    return null;
  },

  async exit() {
    await commands.close_all();
    setTimeout(() => process.exit(0), 50);
    return null;
  },
};

// ---------------------------------------------------------------------------------------------
// Main loop
// ---------------------------------------------------------------------------------------------
async function handle(line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (err) {
    log('unparseable input line:', line);
    return;
  }
  const { id, cmd } = msg;
  // `timeout_ms` is an alias of `timeout` (the Python wrapper's own `timeout` is its deadline).
  if (msg.timeout_ms !== undefined) msg.timeout = msg.timeout_ms;
  const fn = Object.hasOwn(commands, cmd) ? commands[cmd] : undefined;
  if (!fn) {
    reply({ id, ok: false, error: `unknown command ${JSON.stringify(cmd)}` });
    return;
  }
  try {
    const result = await fn(msg);
    reply({ id, ok: true, result: result === undefined ? null : result });
  } catch (err) {
    reply({ id, ok: false, error: errorMessage(err) });
  }
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  if (line.trim()) handle(line); // not awaited: commands run concurrently
});
rl.on('close', () => {
  commands.close_all().finally(() => setTimeout(() => process.exit(0), 50));
});
log(`ready (node ${process.version})`);
