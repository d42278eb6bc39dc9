// Client side of scripts/check-image.sh: one real pusher-js 8 connection and the Node `pusher`
// SDK against a pyserver running from the container image.
//
//   node image_check.mjs HOST PORT APP_ID KEY SECRET
//
// Steps, each bounded in time:
//   1. pusher-js connects and subscribes to a public channel;
//   2. the Node SDK triggers an event on it through the HTTP API; pusher-js must receive it;
//   3. prints `READY` on stdout: the caller now sends SIGTERM to the server;
//   4. waits for the WebSocket to close and checks the close code is 4200 (pusher-js reads
//      4200-4299 as "reconnect now", so a drained client moves to another node at once).
// Stdout carries `READY`, then one JSON line {"ok": bool, ...}. The exit code is 0 only when
// every step passed. Diagnostics go to stderr.

import PusherServer from 'pusher';
import Pusher from 'pusher-js';

const [host, portText, appId, key, secret] = process.argv.slice(2);
const port = Number(portText);
const STEP_MS = 10_000;
const CLOSE_MS = 30_000; // longer than the server's default shutdown_grace (10 s)

function finish(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(result.ok ? 0 : 1);
}

function within(ms, what, executor) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    executor(
      (value) => { clearTimeout(timer); resolve(value); },
      (err) => { clearTimeout(timer); reject(err); },
    );
  });
}

const pusher = new Pusher(key, {
  cluster: 'mt1',
  wsHost: host,
  wsPort: port,
  forceTLS: false,
  enabledTransports: ['ws'],
  disableStats: true,
});
const errors = [];
pusher.connection.bind('error', (err) => errors.push(err?.data ?? err?.type ?? String(err)));

try {
  await within(STEP_MS, 'pusher-js connected', (resolve) => {
    pusher.connection.bind('connected', resolve);
  });
  const channel = pusher.subscribe('image-check');
  await within(STEP_MS, 'subscription to image-check', (resolve, reject) => {
    channel.bind('pusher:subscription_succeeded', resolve);
    channel.bind('pusher:subscription_error', (status) =>
      reject(new Error(`subscription_error ${JSON.stringify(status)}`)));
  });

  const nonce = `n-${process.pid}-${Date.now()}`;
  const received = within(STEP_MS, 'the SDK-triggered event', (resolve) => {
    channel.bind('sdk-event', (data) => { if (data?.nonce === nonce) resolve(data); });
  });
  const sdk = new PusherServer({ appId, key, secret, host, port, useTLS: false });
  const response = await sdk.trigger('image-check', 'sdk-event', { nonce });
  if (response.status !== 200) throw new Error(`SDK trigger answered ${response.status}`);
  await received;

  // The transport is internal to pusher-js; its `closed` event carries the real close code.
  const transport = pusher.connection.connection?.transport;
  if (!transport) throw new Error('pusher-js exposes no transport to watch');
  const closed = within(CLOSE_MS, 'the close after SIGTERM', (resolve) => {
    transport.bind('closed', (event) => resolve(event));
  });
  process.stdout.write('READY\n');
  const event = await closed;
  const errorsUntilClose = errors.slice(); // later ones come from reconnecting to no server
  pusher.disconnect();
  finish({
    ok: event?.code === 4200,
    close_code: event?.code ?? null,
    close_reason: event?.reason ?? null,
    errors: errorsUntilClose,
  });
} catch (err) {
  pusher.disconnect();
  finish({ ok: false, error: err instanceof Error ? err.message : String(err), errors });
}
