// Type-checked (never run) by tests/node_module.rs with tsc --strict against the
// signaling.d.ts the server serves: the documented uses compile, misuses do not.
import { WebRTCSignalingClient, WebRTCPeerMesh } from 'webrtc-signaling-client';
import type { CloseInfo, OfferMessage, SignalingClientOptions } from 'webrtc-signaling-client';
import pkg from 'webrtc-signaling-client';

const options: SignalingClientOptions = { baseUrl: 'wss://signal.example.org', token: 't' };
const client = new WebRTCSignalingClient(options);
const off: () => void = client.on('existing_peers', (m) => {
  const peers: string[] = m.peers;
  const token: string | undefined = m.resume_token;
  void peers;
  void token;
});
off();
client.on('offer', (m: OfferMessage) => {
  const from: string = m.from_peer_id;
  const sdp: string | undefined = m.offer.sdp;
  void from;
  void sdp;
});
client.on('close', (info: CloseInfo) => {
  const text: string | null = WebRTCSignalingClient.describeClose(info);
  const code: number = info.code;
  void text;
  void code;
});
async function call(pc: RTCPeerConnection): Promise<void> {
  await client.connect('room1', 'peer1');
  const sent: boolean = client.sendOffer('peer2', { type: 'offer', sdp: 'v=0' });
  client.sendIceCandidate('peer2', null);
  client.ping();
  void sent;
  const mesh = new WebRTCPeerMesh(client, { rtcConfig: { iceServers: [] }, log: console.log });
  mesh.on('track', (id: string, track: MediaStreamTrack, stream: MediaStream) => {
    void id;
    void track;
    void stream;
  });
  mesh.setLocalStream(null);
  const ids: string[] = mesh.peerIds();
  void ids;
  void pc;
  client.disconnect();
}
void call;
const same: typeof WebRTCSignalingClient = pkg.WebRTCSignalingClient;
void same;

// Misuses the declarations must refuse.
// @ts-expect-error: an unknown event
client.on('no_such_event', () => {});
// @ts-expect-error: connect takes a room and a peer id
void client.connect('room1');
// @ts-expect-error: peers is a string list
client.on('existing_peers', (m) => { const n: number = m.peers; void n; });
