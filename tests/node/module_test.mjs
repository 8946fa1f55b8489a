// Drives the ES module build of signaling.js against a real server from Node, the
// way an app would after vendoring the package that the server serves
// (node_modules/webrtc-signaling-client: package.json, signaling.mjs/.js/.d.ts).
// Run by tests/node_module.rs: node [--experimental-websocket] module_test.mjs WS_BASE
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { WebRTCSignalingClient, WebRTCPeerMesh } from 'webrtc-signaling-client';
import pkg from 'webrtc-signaling-client';

const require = createRequire(import.meta.url);
const base = process.argv[2];
const WS = globalThis.WebSocket;
assert.equal(typeof WS, 'function', 'a WebSocket implementation (node --experimental-websocket)');

// The package's three entry points: named exports, the default export, require().
assert.equal(typeof WebRTCPeerMesh, 'function');
assert.equal(pkg.WebRTCSignalingClient, WebRTCSignalingClient);
const cjs = require('webrtc-signaling-client');
assert.equal(typeof cjs.WebRTCSignalingClient, 'function');
assert.equal(typeof globalThis.WebRTCSignalingClient, 'undefined', 'a module sets no globals');

// Outside a browser the base URL must be given, and says so.
assert.throws(() => new WebRTCSignalingClient({ WebSocket: WS }).url('r', 'p'), /baseUrl/);

/** The next `type` event of `client`, as a promise. */
function next(client, type) {
  return new Promise((resolve) => {
    const off = client.on(type, (m) => { off(); resolve(m); });
  });
}

const timeout = setTimeout(() => { console.error('node module test: timed out'); process.exit(2); }, 20000);

const alice = new WebRTCSignalingClient({ baseUrl: base, WebSocket: WS });
assert.equal(alice.send({ type: 'ping' }), false, 'send before connect() is refused, not thrown');
let first = next(alice, 'existing_peers');
await alice.connect('room1', 'alice');
assert.deepEqual((await first).peers, []);

const bob = new WebRTCSignalingClient({ baseUrl: base, WebSocket: WS });
const joined = next(alice, 'peer_joined');
first = next(bob, 'existing_peers');
await bob.connect('room1', 'bob');
assert.deepEqual((await first).peers, ['alice']);
assert.equal((await joined).peer_id, 'bob');

const offer = next(bob, 'offer');
assert.ok(alice.sendOffer('bob', { type: 'offer', sdp: 'v=0\r\n' }));
const o = await offer;
assert.equal(o.from_peer_id, 'alice');
assert.deepEqual(o.offer, { type: 'offer', sdp: 'v=0\r\n' });

const answer = next(alice, 'answer');
bob.sendAnswer('alice', { type: 'answer', sdp: 'v=0\r\n' });
assert.equal((await answer).from_peer_id, 'bob');

const cand = next(bob, 'ice_candidate');
alice.sendIceCandidate('bob', { candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', sdpMid: '0', sdpMLineIndex: 0 });
assert.equal((await cand).candidate.sdpMid, '0');

const pong = next(alice, 'pong');
assert.ok(alice.ping());
await pong;

const error = next(alice, 'error');
alice.send({ type: 'offer', offer: { type: 'offer', sdp: '' }, target_peer_id: 'nobody' });
assert.equal((await error).code, 'peer_not_found');

// A second "alice" is refused: 4409, described as the page shows it.
const dup = new WebRTCSignalingClient({ baseUrl: base, WebSocket: WS });
const refused = next(dup, 'close');
await dup.connect('room1', 'alice').catch(() => {});
const info = await refused;
assert.equal(WebRTCSignalingClient.describeClose(info), 'peer_id_taken (4409)');
assert.equal(info.admitted, false);

const left = next(alice, 'peer_left');
const bobClosed = next(bob, 'close');
bob.disconnect();
assert.equal((await bobClosed).byClient, true);
assert.equal((await left).peer_id, 'bob');

const aliceClosed = next(alice, 'close');
alice.disconnect();
await aliceClosed;
clearTimeout(timeout);
console.log('node module test: ok');
