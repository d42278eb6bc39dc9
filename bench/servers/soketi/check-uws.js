// Exit 0 when uWebSockets.js, resolved the way soketi resolves it, is the native addon;
// exit 1 when it would be the pure-JS fallback the registry build switches to silently
// when its binary cannot load (Node other than 16/18/20, or a libc too old).
'use strict';
const path = require('path');
const soketiDir = path.dirname(require.resolve('@soketi/soketi/package.json'));
const uwsPath = require.resolve('uWebSockets.js', { paths: [soketiDir] });
delete process.env.UWS_USE_FALLBACK;
const uWS = require(uwsPath);
const loaded = Object.keys(require.cache);
const native = loaded.find((f) => f.endsWith('.node'));
if (!native || typeof uWS.App !== 'function') {
  console.error(`uWebSockets.js has no native binary for ${process.platform}_${process.arch}_` +
    `${process.versions.modules} (node ${process.version}); soketi would run on its slow ` +
    'pure-JS fallback. Use Node 16, 18 or 20.');
  process.exit(1);
}
