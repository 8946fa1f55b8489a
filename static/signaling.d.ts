// Type declarations of signaling.js / signaling.mjs (the webrtc-signaling client).
// Wire protocol: PROTOCOL.md of the server.

/** Options of {@link WebRTCSignalingClient}. */
export interface SignalingClientOptions {
  /** `ws://host:port` or `wss://host[/prefix]`; default: where the script was served from. */
  baseUrl?: string;
  /** Sent as `?token=` (servers started with --auth-secret). */
  token?: string | null;
  /** The WebSocket class to use; default: the global `WebSocket`. */
  WebSocket?: WebSocketConstructorLike;
  /** Reconnect by itself after an accidental end, resuming the session (default true). */
  reconnect?: boolean;
  /** Cap of the backoff between attempts, in ms (default 10000). */
  maxRetryDelayMs?: number;
  /** A reconnection later than this after the drop is a new session (default 8000). */
  resumeWindowMs?: number;
}

/** The `reconnecting` event's details. */
export interface ReconnectingInfo {
  attempt: number;
  delayMs: number;
  code: number;
  reason: string;
  error: ErrorMessage | null;
}

/** What the client needs of a WebSocket class (the browser's, Node's, `ws`'s). */
export interface WebSocketConstructorLike {
  new (url: string): WebSocketLike;
}

export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: { code: number; reason: string; wasClean: boolean }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface SessionDescription {
  type: 'offer' | 'answer' | string;
  sdp?: string;
}

export interface IceCandidate {
  candidate: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
  usernameFragment?: string | null;
}

export interface ExistingPeersMessage { type: 'existing_peers'; peers: string[]; resume_token?: string }
export interface PeerJoinedMessage { type: 'peer_joined'; peer_id: string }
export interface PeerLeftMessage { type: 'peer_left'; peer_id: string }
export interface OfferMessage { type: 'offer'; offer: SessionDescription; target_peer_id: string; from_peer_id: string; [extra: string]: unknown }
export interface AnswerMessage { type: 'answer'; answer: SessionDescription; target_peer_id: string; from_peer_id: string; [extra: string]: unknown }
export interface IceCandidateMessage { type: 'ice_candidate'; candidate: IceCandidate | null; target_peer_id: string; from_peer_id: string; [extra: string]: unknown }
export interface ErrorMessage { type: 'error'; code: string; message: string }
export interface PongMessage { type: 'pong' }

export type ServerMessage =
  | ExistingPeersMessage | PeerJoinedMessage | PeerLeftMessage
  | OfferMessage | AnswerMessage | IceCandidateMessage
  | ErrorMessage | PongMessage;

/** The `close` event's details. */
export interface CloseInfo {
  code: number;
  reason: string;
  wasClean: boolean;
  /** `disconnect()` was called. */
  byClient: boolean;
  /** The last `error` message the server sent, if any. */
  error: ErrorMessage | null;
  /** `existing_peers` arrived: the server had admitted the peer. */
  admitted: boolean;
  opened: boolean;
}

export interface SignalingEvents {
  open: () => void;
  existing_peers: (m: ExistingPeersMessage) => void;
  peer_joined: (m: PeerJoinedMessage) => void;
  peer_left: (m: PeerLeftMessage) => void;
  offer: (m: OfferMessage) => void;
  answer: (m: AnswerMessage) => void;
  ice_candidate: (m: IceCandidateMessage) => void;
  error: (m: ErrorMessage) => void;
  pong: (m: PongMessage) => void;
  message: (m: ServerMessage) => void;
  /** Only when the session is over for good (a drop is `reconnecting` instead). */
  close: (info: CloseInfo) => void;
  reconnecting: (info: ReconnectingInfo) => void;
  /** `resumed: false`: the server had given the peer up; a new session began. */
  reconnected: (info: { resumed: boolean }) => void;
}

/** The signaling socket: one room, one peer id. */
export class WebRTCSignalingClient {
  constructor(options?: SignalingClientOptions);
  baseUrl: string;
  token: string | null;
  roomId: string | null;
  peerId: string | null;
  /** The current socket, if any. */
  websocket: WebSocketLike | null;
  /** The token of the last `existing_peers` (PROTOCOL.md §8), if the server gave one. */
  resumeToken: string | null;
  /** The other peers of the room, in join order. */
  peers: string[];
  /** Subscribes; returns the function that unsubscribes. */
  on<K extends keyof SignalingEvents>(type: K, fn: SignalingEvents[K]): () => void;
  off<K extends keyof SignalingEvents>(type: K, fn: SignalingEvents[K]): void;
  /** The signaling URL for a room and a peer id (and a resume token). */
  url(roomId: string, peerId: string, resumeToken?: string | null): string;
  /** Resolves when the socket is open (admission: `existing_peers` or `close`). */
  connect(roomId: string, peerId: string): Promise<void>;
  /** Closes with 1000; a `close` event with `byClient: true` follows. */
  disconnect(): void;
  isOpen(): boolean;
  /** Between a drop and the next session. */
  isReconnecting(): boolean;
  /** Sends one message (held, in order, while reconnecting); `false` when it cannot. */
  send(message: object): boolean;
  sendOffer(targetPeerId: string, offer: SessionDescription): boolean;
  sendAnswer(targetPeerId: string, answer: SessionDescription): boolean;
  sendIceCandidate(targetPeerId: string, candidate: IceCandidate | { toJSON(): IceCandidate } | null): boolean;
  /** Server extension: answered with a `pong` message. */
  ping(): boolean;
  /** `"peer_id_taken (4409)"` for a refused or ended session; `null` for a normal close. */
  static describeClose(info: Pick<CloseInfo, 'code' | 'reason' | 'error'>): string | null;
}

export interface PeerMeshOptions {
  rtcConfig?: RTCConfiguration;
  log?: (text: string) => void;
}

export interface PeerMeshEvents {
  peer: (peerId: string) => void;
  'peer-left': (peerId: string) => void;
  track: (peerId: string, track: MediaStreamTrack, stream: MediaStream) => void;
  state: (peerId: string, state: RTCPeerConnectionState) => void;
  error: (peerId: string, error: unknown) => void;
}

/**
 * One RTCPeerConnection per other peer (full mesh), perfect negotiation, local
 * media that can be set or cleared at any time. Needs WebRTC (a browser, or
 * react-native-webrtc's registerGlobals()).
 */
export class WebRTCPeerMesh {
  constructor(client: WebRTCSignalingClient, options?: PeerMeshOptions);
  client: WebRTCSignalingClient;
  rtcConfig: RTCConfiguration;
  localStream: MediaStream | null;
  on<K extends keyof PeerMeshEvents>(type: K, fn: PeerMeshEvents[K]): () => void;
  off<K extends keyof PeerMeshEvents>(type: K, fn: PeerMeshEvents[K]): void;
  setRtcConfig(rtcConfig: RTCConfiguration | null): void;
  /** Sends `stream`'s tracks to every peer, now and later; `null` stops sending. */
  setLocalStream(stream: MediaStream | null): void;
  /** Sends `newTrack` wherever `oldTrack` was sent (camera switch), no renegotiation. */
  replaceTrack(oldTrack: MediaStreamTrack, newTrack: MediaStreamTrack): Promise<void>;
  peerIds(): string[];
  removePeer(peerId: string): void;
  removeAllPeers(): void;
  /** Stops following the client and closes every connection. */
  close(): void;
}

declare const _default: {
  WebRTCSignalingClient: typeof WebRTCSignalingClient;
  WebRTCPeerMesh: typeof WebRTCPeerMesh;
};
export default _default;
