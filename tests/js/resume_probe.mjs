// Probe for channel history (docs/history.md): how unmodified pusher-js (8 or 7) and Laravel
// Echo handle what the history feature sends and needs, against a bare WebSocket server that
// the Python test (tests/history/test_client_probe.py) runs and scripts frame by frame.
//
//   node resume_probe.mjs <port> <8|7> <state_change|connected>
//
// It installs the documented anonymous catch-up snippet (the resume token is read from
// `pusher_internal:resume_token` and sent back with `pusher.send_event('pusher:resume', …)`
// on the next connection), binding it to `state_change` (the documented way) or to
// `connected` (to show why not). It listens for `pusher:recovery_failed` the ways an app
// would: channel.bind, channel.bind_global, pusher.bind_global, Echo's .listen('.…') and
// Echo's .listenToAll. Every observation is one JSON line on stdout; it exits when the
// server sends `probe-done` on chat-1.

import Echo from 'laravel-echo';
import Pusher8 from 'pusher-js';
import Pusher7 from 'pusher-js-7';

const [port, version, mode] = process.argv.slice(2);
const Pusher = version === '7' ? Pusher7 : Pusher8;
const say = (entry) => process.stdout.write(JSON.stringify(entry) + '\n');

const pusher = new Pusher('app-key', {
  cluster: 'local',
  wsHost: '127.0.0.1',
  wsPort: Number(port),
  forceTLS: false,
  enabledTransports: ['ws'],
  disableStats: true,
  channelAuthorization: {
    customHandler: (params, callback) => callback(null, { auth: 'app-key:signature' }),
  },
});

// --- the documented snippet (docs/history.md), verbatim but for `mode` ---------------------
let resumeToken = null;
pusher.connection.bind('message', (message) => {
  if (message.event === 'pusher_internal:resume_token') resumeToken = message.data.token;
});
if (mode === 'state_change') {
  pusher.connection.bind('state_change', ({ current }) => {
    if (current === 'connected' && resumeToken) {
      pusher.send_event('pusher:resume', { token: resumeToken });
    }
  });
} else {
  pusher.connection.bind('connected', () => {
    if (resumeToken) pusher.send_event('pusher:resume', { token: resumeToken });
  });
}
// ------------------------------------------------------------------------------------------

const echo = new Echo({ broadcaster: 'pusher', client: pusher });
const chat = echo.channel('chat-1');
chat.listen('.pusher:recovery_failed', (data) => say({ via: 'echo.listen', data }));
chat.listenToAll((event, data) => say({ via: 'echo.listenToAll', event, data }));
echo.private('chat-2');

for (const name of ['chat-1', 'private-chat-2']) {
  const channel = pusher.channel(name);
  channel.bind('pusher:recovery_failed', (data) => say({ via: 'channel.bind', name, data }));
  channel.bind_global((event, data) => say({ via: 'channel.bind_global', name, event, data }));
}
pusher.bind_global((event, data) => say({ via: 'pusher.bind_global', event, data }));
pusher.channel('chat-1').bind('probe-done', () => {
  say({ via: 'done' });
  pusher.disconnect();
  setTimeout(() => process.exit(0), 50);
});
setTimeout(() => {
  say({ via: 'timeout' });
  process.exit(2);
}, 20000);
