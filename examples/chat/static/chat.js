// The chat page: stock pusher-js and nothing else. There is no "load the history" request and
// no "fetch what I missed since the last id" after a reconnect: pyserver's channel history
// does both (docs/history.md). A new page gets the channel's last messages (rewind), and a
// page whose connection dropped gets exactly what it missed once it is back (catch-up).
const config = window.CHAT_CONFIG;
const pusher = new Pusher(config.key, {
  cluster: 'local', // pusher-js 8 wants one; wsHost decides where it connects
  wsHost: config.wsHost,
  wsPort: config.wsPort,
  forceTLS: false,
  enabledTransports: ['ws'],
  disableStats: true,
});

// Catch-up for a page nobody signed in to: the resume snippet of docs/history.md. pyserver
// sends each connection a token; after a reconnect the page sends back the previous one,
// before pusher-js re-subscribes (hence `state_change`, not `connected`).
let resumeToken = null;
pusher.connection.bind('message', (message) => {
  if (message.event === 'pusher_internal:resume_token') resumeToken = message.data.token;
});
pusher.connection.bind('state_change', ({ current }) => {
  if (current === 'connected' && resumeToken) {
    pusher.send_event('pusher:resume', { token: resumeToken });
  }
});

const list = document.getElementById('messages');
const status = document.getElementById('status');
const notice = document.getElementById('notice');
const shown = new Set();

pusher.connection.bind('state_change', ({ current }) => {
  status.textContent = current;
  status.className = current;
});

const channel = pusher.subscribe(config.channel);
channel.bind('message', (message) => {
  // A connection that died silently may have been written messages after its last answered
  // ping: catch-up sends those again, and the id drops them here.
  if (shown.has(message.id)) return;
  shown.add(message.id);
  const item = document.createElement('li');
  item.dataset.id = message.id;
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = message.name;
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = message.text;
  item.append(name, text);
  list.append(item);
  item.scrollIntoView({ block: 'nearest' });
});
channel.bind('pusher:recovery_failed', ({ reason }) => {
  // Away too long (or the server restarted): not every missed message is still kept. The
  // latest ones follow right away (the rewind), so start the list over from them.
  list.replaceChildren();
  shown.clear();
  notice.textContent = `Some messages could not be recovered (${reason}); showing the latest.`;
});
channel.bind('pusher:subscription_succeeded', () => {
  notice.textContent = ''; // pusher:recovery_failed, if any, comes after it
});

const nameInput = document.getElementById('name');
const textInput = document.getElementById('text');
nameInput.value = localStorage.getItem('chat-name') || '';
document.getElementById('send').addEventListener('submit', async (event) => {
  event.preventDefault();
  localStorage.setItem('chat-name', nameInput.value);
  const response = await fetch('/messages', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: nameInput.value, text: textInput.value }),
  });
  if (response.ok) {
    textInput.value = '';
  } else {
    notice.textContent = `Not sent: ${(await response.json()).error}`;
  }
});

window.chat = { pusher, channel }; // for the browser console (and the example's test)
