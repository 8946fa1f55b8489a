/*
 * signaling.js - browser client for the webrtc-signaling server.
 *
 * Plain JavaScript, no dependencies, no build step. Three ways in, one source:
 *   <script src="/webrtc/client/signaling.js"></script>  defines the globals
 *     window.WebRTCSignalingClient and window.WebRTCPeerMesh;
 *   import { WebRTCSignalingClient } from '/webrtc/client/signaling.mjs'
 *     (the server serves this file with an export line after it);
 *   require('./signaling.js') or a bundler: module.exports, no globals.
 * Types: signaling.d.ts. The signaling client needs no DOM: outside a browser
 * pass baseUrl and a WebSocket implementation (Node, React Native).
 *
 * WebRTCSignalingClient: the signaling socket only (the shape of the original
 *   FastAPI description's client): connect(roomId, peerId), one handler list
 *   per message type, send()/sendOffer()/sendAnswer()/sendIceCandidate().
 *
 * WebRTCPeerMesh: optional. One RTCPeerConnection per other peer of the room
 *   (full mesh), W3C "perfect negotiation" (the peer whose id sorts lower is
 *   polite), buffering of early ICE candidates, local media that can be set or
 *   cleared at any time (renegotiates), and receiving without local media.
 *
 * Reconnect (PROTOCOL.md section 8): after an accidental end (network drop,
 * server restart) the client reconnects by itself with capped, jittered
 * backoff and the session's resume_token, so the server holds the peer and the
 * room never sees it leave; the app sees 'reconnecting' and 'reconnected'
 * events instead of 'close', and messages sent meanwhile wait in order.
 *
 * Wire protocol: see PROTOCOL.md of the server (sections 3-5, 8).
 */
(function (root) {
  'use strict';

  // Close codes of PROTOCOL.md section 5, for messages when the server sent
  // no close reason.
  var CLOSE_CODES = {
    1001: 'going_away',
    1008: 'slow_consumer',
    1009: 'message_too_large',
    4400: 'invalid_id',
    4401: 'unauthorized',
    4403: 'forbidden',
    4408: 'timeout',
    4409: 'peer_id_taken',
    4410: 'replaced',
    4429: 'rate_limited',
    4503: 'server_full',
    1013: 'try_again_later'
  };

  // Closes that retrying cannot fix (PROTOCOL.md section 8): bad ids, no
  // authorisation, a foreign origin or a kick, and being taken over.
  var FATAL_CLOSES = [4400, 4401, 4403, 4410];
  // Messages held while reconnecting; beyond this the oldest are dropped.
  var OUTBOX_MAX = 512;

  function callAll(list, args, where) {
    if (!list) return;
    list.slice().forEach(function (fn) {
      try {
        fn.apply(null, args);
      } catch (e) {
        // A broken handler must not break the message loop.
        if (root.console) root.console.error('signaling.js: ' + where + ' handler threw', e);
      }
    });
  }

  // Where this file was loaded from, while it runs: the module's own URL (set by
  // the ES module build), or the classic <script>'s.
  var SCRIPT_URL = (typeof module !== 'undefined' && module && module.url) ||
    (root && root.document && root.document.currentScript && root.document.currentScript.src) || '';

  /**
   * Default base URL: the server this script was served from, ws: or wss:, with
   * the path prefix it sits under behind a reverse proxy (…/prefix/webrtc/client/
   * signaling.js gives …/prefix); else the page's origin.
   */
  function defaultBaseUrl() {
    var m = /^(https?):\/\/([^/?#]+)(\/[^?#]*)?\/webrtc\/client\/signaling\.m?js(?:[?#].*)?$/.exec(SCRIPT_URL);
    if (m) return (m[1] === 'https' ? 'wss:' : 'ws:') + '//' + m[2] + (m[3] || '');
    var loc = root && root.location;
    if (!loc || !loc.host) {
      throw new Error('WebRTCSignalingClient: pass options.baseUrl (e.g. "ws://host:8000") outside a browser page');
    }
    return (loc.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + loc.host;
  }

  /**
   * new WebRTCSignalingClient({ baseUrl, token, reconnect, maxRetryDelayMs, resumeWindowMs })
   *   baseUrl:   "ws://host:port" (default: the page's origin, ws: or wss:)
   *   token:     appended as ?token=... when given (optional auth)
   *   reconnect: reconnect after an accidental end (default true)
   *   maxRetryDelayMs: cap of the backoff between attempts (default 10000)
   *   resumeWindowMs:  a reconnection later than this after the drop is taken
   *              as a new session, not a resume (default 8000, below the
   *              server's default 10 s grace; set it to the server's grace)
   *   WebSocket: the WebSocket class to use (default: the global one), e.g.
   *            Node 20's (node --experimental-websocket) or the `ws` package's
   *
   * Events (client.on(type, fn); returns a function that unsubscribes):
   *   'open'            the socket is open (not yet admitted)
   *   'existing_peers'  {type, peers:[...]}  first message: admitted
   *   'peer_joined'     {type, peer_id}
   *   'peer_left'       {type, peer_id}
   *   'offer' / 'answer' / 'ice_candidate'  relayed messages, with from_peer_id
   *   'error'           {type:'error', code, message} from the server
   *   'pong'            answer to ping()
   *   'message'         every parsed message, whatever its type
   *   'close'           {code, reason, wasClean, byClient, error, admitted}
   *                     error is the last 'error' message received, if any;
   *                     only when the session is over for good
   *   'reconnecting'    {attempt, delayMs, code, reason, error} the socket
   *                     dropped; another attempt follows after delayMs
   *   'reconnected'     {resumed} back; resumed=false: the server had given
   *                     the peer up, so this is a new session (the room saw
   *                     it leave and join; 'existing_peers' is emitted again)
   * On a resume the peers that left or joined meanwhile are reported as
   * 'peer_left' / 'peer_joined' (the server does not replay them).
   */
  function WebRTCSignalingClient(options) {
    options = options || {};
    this.baseUrl = options.baseUrl || defaultBaseUrl();
    this.token = options.token || null;
    this.WebSocket = options.WebSocket || (root && root.WebSocket) || null;
    this.websocket = null; // the current WebSocket, if any
    this.roomId = null;
    this.peerId = null;
    this._handlers = {};
    this._conn = null;
    this.reconnect = options.reconnect !== false;
    this.maxRetryDelayMs = options.maxRetryDelayMs || 10000;
    this.resumeWindowMs = options.resumeWindowMs || 8000;
    this.resumeToken = null; // from the last existing_peers
    this.peers = []; // the other peers, in join order
    this._wanted = false; // connect() called and disconnect() not
    this._retry = null; // {attempt, since, timer} while reconnecting
    this._outbox = [];
  }

  WebRTCSignalingClient.prototype.on = function (type, fn) {
    var list = this._handlers[type] || (this._handlers[type] = []);
    list.push(fn);
    var self = this;
    return function () { self.off(type, fn); };
  };

  WebRTCSignalingClient.prototype.off = function (type, fn) {
    var list = this._handlers[type];
    if (!list) return;
    var i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
  };

  WebRTCSignalingClient.prototype._emit = function (type) {
    var args = Array.prototype.slice.call(arguments, 1);
    callAll(this._handlers[type], args, type);
  };

  /** The signaling URL for a room and peer id (and a resume token). */
  WebRTCSignalingClient.prototype.url = function (roomId, peerId, resumeToken) {
    var url = this.baseUrl.replace(/\/+$/, '') + '/webrtc/signaling/' +
      encodeURIComponent(roomId) + '/' + encodeURIComponent(peerId);
    var query = [];
    if (this.token) query.push('token=' + encodeURIComponent(this.token));
    if (resumeToken) query.push('resume=' + encodeURIComponent(resumeToken));
    return query.length ? url + '?' + query.join('&') : url;
  };

  /**
   * Opens the socket. The promise resolves on 'open' and rejects when the
   * socket closes before opening. Whether the server admitted the peer is
   * known from the first message ('existing_peers') or the 'close' event.
   */
  WebRTCSignalingClient.prototype.connect = function (roomId, peerId) {
    this._stopRetry();
    this._drop();
    this.roomId = roomId;
    this.peerId = peerId;
    this.resumeToken = null;
    this.peers = [];
    this._outbox = [];
    this._wanted = true;
    return this._open(null);
  };

  /** One socket; `retry` is the reconnection state when this is a retry. */
  WebRTCSignalingClient.prototype._open = function (retry) {
    var self = this;
    var roomId = this.roomId;
    var peerId = this.peerId;
    // State of this one socket (a later connect() must not mix them up).
    var conn = { ws: null, byClient: false, lastError: null, admitted: false, opened: false,
                 resumeToken: retry ? this.resumeToken : null };
    this._conn = conn;
    return new Promise(function (resolve, reject) {
      var ws;
      try {
        if (!self.WebSocket) throw new Error('no WebSocket implementation: pass options.WebSocket');
        ws = new self.WebSocket(self.url(roomId, peerId, conn.resumeToken));
      } catch (e) {
        self._conn = null;
        reject(e);
        return;
      }
      conn.ws = ws;
      self.websocket = ws;
      ws.onopen = function () {
        conn.opened = true;
        if (!retry) self._emit('open');
        resolve();
      };
      ws.onmessage = function (event) {
        if (typeof event.data !== 'string') return;
        var message;
        try {
          message = JSON.parse(event.data);
        } catch (e) {
          if (root.console) root.console.warn('signaling.js: ignoring a non-JSON message');
          return;
        }
        if (!message || typeof message !== 'object' || typeof message.type !== 'string') return;
        if (message.type === 'error') conn.lastError = message;
        if (message.type === 'existing_peers') {
          conn.admitted = true;
          self.resumeToken = typeof message.resume_token === 'string' ? message.resume_token : null;
          if (retry) return self._rejoined(message, retry, conn);
          self.peers = (Array.isArray(message.peers) ? message.peers : []).slice();
        } else if (message.type === 'peer_joined') {
          if (self.peers.indexOf(message.peer_id) < 0) self.peers.push(message.peer_id);
        } else if (message.type === 'peer_left') {
          var i = self.peers.indexOf(message.peer_id);
          if (i < 0) return; // already reported after a resume
          self.peers.splice(i, 1);
        }
        self._emit('message', message);
        self._emit(message.type, message);
      };
      ws.onerror = function () {
        // Always followed by a close event, which carries the details.
      };
      ws.onclose = function (event) {
        if (self._conn === conn) {
          self._conn = null;
          self.websocket = null;
        }
        var info = {
          code: event.code,
          reason: event.reason || '',
          wasClean: event.wasClean,
          byClient: conn.byClient,
          error: conn.lastError,
          admitted: conn.admitted,
          opened: conn.opened
        };
        if (!conn.opened && !retry) {
          var err = new Error('signaling socket closed before opening (' + event.code + ')');
          err.code = event.code;
          reject(err);
        }
        if (self._retryable(info, conn, retry)) {
          self._scheduleRetry(info, retry);
        } else {
          self._wanted = false;
          self._retry = null;
          self._outbox = [];
          self._emit('close', info);
        }
      };
    });
  };

  /** Whether an end is accidental and worth another attempt. */
  WebRTCSignalingClient.prototype._retryable = function (info, conn, retry) {
    if (!this.reconnect || !this._wanted || info.byClient) return false;
    // Only a session that was once admitted is resumed: a first refusal stands.
    if (!retry && !conn.admitted) return false;
    if (FATAL_CLOSES.indexOf(info.code) >= 0) return false;
    if (info.code === 4409) {
      // Taken without a token: someone else holds the id. With one (stale or
      // used), try again as a new session once the server lets the id go.
      if (!conn.resumeToken) return false;
      this.resumeToken = null;
    }
    return true;
  };

  WebRTCSignalingClient.prototype._scheduleRetry = function (info, retry) {
    var self = this;
    var state = retry || { attempt: 0, since: Date.now(), timer: null };
    state.attempt += 1;
    // Exponential backoff with full jitter in its upper half, capped.
    var base = Math.min(this.maxRetryDelayMs, 250 * Math.pow(2, state.attempt - 1));
    var delay = Math.round(base / 2 + Math.random() * base / 2);
    this._retry = state;
    state.timer = setTimeout(function () {
      if (self._retry !== state || !self._wanted) return;
      state.timer = null;
      self._open(state).catch(function () { /* the close handler retries */ });
    }, delay);
    this._emit('reconnecting', { attempt: state.attempt, delayMs: delay, code: info.code,
                                 reason: info.reason, error: info.error });
  };

  WebRTCSignalingClient.prototype._stopRetry = function () {
    if (this._retry && this._retry.timer) clearTimeout(this._retry.timer);
    this._retry = null;
  };

  /** The first message after a reconnection: resumed, or a new session. */
  WebRTCSignalingClient.prototype._rejoined = function (message, retry, conn) {
    var self = this;
    var now = Array.isArray(message.peers) ? message.peers.slice() : [];
    var before = this.peers;
    // The server answers a resume and a new join alike; a token it could still
    // accept (sent within the grace) means the peer was held.
    var resumed = !!conn.resumeToken && Date.now() - retry.since < this.resumeWindowMs;
    this._retry = null;
    if (resumed) {
      // The server does not replay joins and leaves: say what changed.
      this.peers = now;
      before.filter(function (p) { return now.indexOf(p) < 0; }).forEach(function (p) {
        var m = { type: 'peer_left', peer_id: p };
        self._emit('message', m);
        self._emit('peer_left', m);
      });
      now.filter(function (p) { return before.indexOf(p) < 0; }).forEach(function (p) {
        var m = { type: 'peer_joined', peer_id: p };
        self._emit('message', m);
        self._emit('peer_joined', m);
      });
      var held = this._outbox;
      this._outbox = [];
      this._emit('reconnected', { resumed: true });
      held.forEach(function (text) { self.websocket.send(text); });
    } else {
      // The room saw this peer leave: everything starts again.
      this._outbox = [];
      before.forEach(function (p) {
        var m = { type: 'peer_left', peer_id: p };
        self._emit('message', m);
        self._emit('peer_left', m);
      });
      this.peers = now;
      this._emit('reconnected', { resumed: false });
      this._emit('message', message);
      this._emit('existing_peers', message);
    }
  };

  /** Forgets the current socket without events (used by connect()). */
  WebRTCSignalingClient.prototype._drop = function () {
    var conn = this._conn;
    if (!conn) return;
    this._conn = null;
    this.websocket = null;
    var ws = conn.ws;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try {
      ws.close(1000, 'bye');
    } catch (e) {
      /* already closing */
    }
  };

  /** Closes the socket (code 1000). A 'close' event with byClient=true follows. */
  WebRTCSignalingClient.prototype.disconnect = function () {
    var wasRetrying = !!this._retry;
    this._wanted = false;
    this._stopRetry();
    this._outbox = [];
    var conn = this._conn;
    if (!conn) {
      if (wasRetrying) {
        this._emit('close', { code: 1000, reason: '', wasClean: true, byClient: true,
                              error: null, admitted: true, opened: true });
      }
      return;
    }
    conn.byClient = true;
    try {
      conn.ws.close(1000, 'bye');
    } catch (e) {
      /* already closing */
    }
  };

  WebRTCSignalingClient.prototype.isOpen = function () {
    return !!this.websocket && this.websocket.readyState === 1; // OPEN
  };

  /** Whether the client is between a drop and its next session. */
  WebRTCSignalingClient.prototype.isReconnecting = function () {
    return !!this._retry;
  };

  /**
   * Sends one message object. While reconnecting it waits (in order, bounded)
   * and goes out once the session is resumed. Returns false when it can be
   * neither sent nor held.
   */
  WebRTCSignalingClient.prototype.send = function (message) {
    var text = JSON.stringify(message);
    if (this._retry || (this._conn && this._conn.resumeToken && !this._conn.admitted)) {
      if (this._outbox.length >= OUTBOX_MAX) this._outbox.shift();
      this._outbox.push(text);
      return true;
    }
    if (!this.isOpen()) return false;
    this.websocket.send(text);
    return true;
  };

  WebRTCSignalingClient.prototype.sendOffer = function (targetPeerId, offer) {
    return this.send({ type: 'offer', offer: { type: offer.type, sdp: offer.sdp }, target_peer_id: targetPeerId });
  };

  WebRTCSignalingClient.prototype.sendAnswer = function (targetPeerId, answer) {
    return this.send({ type: 'answer', answer: { type: answer.type, sdp: answer.sdp }, target_peer_id: targetPeerId });
  };

  /** candidate: an RTCIceCandidate, its toJSON() object, or null (end of candidates). */
  WebRTCSignalingClient.prototype.sendIceCandidate = function (targetPeerId, candidate) {
    var c = candidate && typeof candidate.toJSON === 'function' ? candidate.toJSON() : candidate;
    return this.send({ type: 'ice_candidate', candidate: c || null, target_peer_id: targetPeerId });
  };

  /** Liveness check (server extension): the server answers with {"type":"pong"}. */
  WebRTCSignalingClient.prototype.ping = function () {
    return this.send({ type: 'ping' });
  };

  /** "peer_id_taken (4409)" style text for a close event (or null for a normal close). */
  WebRTCSignalingClient.describeClose = function (info) {
    var code = info.code;
    var name = info.reason || null;
    if (!name && (code >= 4000 || CLOSE_CODES[code])) {
      name = (info.error && info.error.code) || CLOSE_CODES[code] || null;
    }
    return name ? name + ' (' + code + ')' : null;
  };

  // ---------------------------------------------------------------------------

  function byteOrderLess(a, b) {
    // ids are ASCII (PROTOCOL.md section 2): UTF-16 order is byte order
    return a < b;
  }

  /**
   * new WebRTCPeerMesh(signalingClient, { rtcConfig, log })
   *   rtcConfig: RTCPeerConnection configuration ({iceServers: [...]}),
   *              may be changed later with setRtcConfig() (new connections)
   *   log:       function(text) for diagnostics (optional)
   *
   * Events (mesh.on(type, fn)):
   *   'peer'        (peerId)                 a peer became known (join order)
   *   'peer-left'   (peerId)
   *   'track'       (peerId, track, stream)  a remote track (stream: its MediaStream)
   *   'state'       (peerId, connectionState)
   *   'error'       (peerId, error)          a negotiation step failed
   *
   * mesh.setLocalStream(stream or null) sends (or stops sending) local media
   * to every peer, now and later. The mesh follows the client's messages
   * until mesh.close().
   */
  function WebRTCPeerMesh(client, options) {
    options = options || {};
    this.client = client;
    this.rtcConfig = options.rtcConfig || { iceServers: [] };
    this._log = options.log || function () {};
    this.localStream = null;
    // Every track is sent as part of this one stream (its id is the msid the
    // other side sees), so a peer's remote stream stays the same object
    // across stop/start of local media, whatever stream the tracks came from.
    this._sendStream = typeof MediaStream === 'function' ? new MediaStream() : null;
    this.peers = new Map(); // peerId -> state, in join order
    this._handlers = {};
    this._unsubscribe = [];
    var self = this;
    var sub = function (type, fn) { self._unsubscribe.push(client.on(type, fn)); };
    sub('existing_peers', function (m) {
      (Array.isArray(m.peers) ? m.peers : []).forEach(function (id) { self._peer(id); });
    });
    sub('peer_joined', function (m) { self._peer(m.peer_id); });
    sub('peer_left', function (m) { self.removePeer(m.peer_id); });
    sub('offer', function (m) { self._enqueue(m.from_peer_id, 'description', m.offer); });
    sub('answer', function (m) { self._enqueue(m.from_peer_id, 'description', m.answer); });
    sub('ice_candidate', function (m) { self._enqueue(m.from_peer_id, 'candidate', m.candidate); });
    sub('close', function () { self.removeAllPeers(); });
  }

  WebRTCPeerMesh.prototype.on = WebRTCSignalingClient.prototype.on;
  WebRTCPeerMesh.prototype.off = WebRTCSignalingClient.prototype.off;
  WebRTCPeerMesh.prototype._emit = WebRTCSignalingClient.prototype._emit;

  WebRTCPeerMesh.prototype.setRtcConfig = function (rtcConfig) {
    this.rtcConfig = rtcConfig || { iceServers: [] };
  };

  /** Stops following the signaling client and closes every connection. */
  WebRTCPeerMesh.prototype.close = function () {
    this._unsubscribe.forEach(function (u) { u(); });
    this._unsubscribe = [];
    this.removeAllPeers();
  };

  WebRTCPeerMesh.prototype.peerIds = function () {
    return Array.from(this.peers.keys());
  };

  WebRTCPeerMesh.prototype.removeAllPeers = function () {
    var self = this;
    this.peerIds().forEach(function (id) { self.removePeer(id); });
  };

  WebRTCPeerMesh.prototype.removePeer = function (peerId) {
    var p = this.peers.get(peerId);
    if (!p) return;
    this.peers.delete(peerId);
    p.closed = true;
    try {
      p.pc.close();
    } catch (e) {
      /* ignore */
    }
    this._log('closed the connection with ' + peerId);
    this._emit('peer-left', peerId);
  };

  /** The state of one peer, created on first sight. */
  WebRTCPeerMesh.prototype._peer = function (peerId) {
    if (typeof peerId !== 'string' || peerId === '' || peerId === this.client.peerId) return null;
    var existing = this.peers.get(peerId);
    if (existing) return existing;
    var p = {
      id: peerId,
      pc: null,
      polite: byteOrderLess(this.client.peerId, peerId),
      makingOffer: false,
      ignoreOffer: false,
      settingRemoteAnswer: false,
      pendingCandidates: [],
      streamSet: null, // senders already associated with _sendStream
      fallbackStream: null,
      queue: Promise.resolve(),
      closed: false
    };
    this.peers.set(peerId, p);
    this._log('new connection with ' + peerId + ' (' + (p.polite ? 'polite' : 'impolite') + ')');
    this._connect(p);
    this._emit('peer', peerId);
    return p;
  };

  /**
   * Gives p a new RTCPeerConnection (sending the local media, if any). The
   * events of a connection that is no longer p's are ignored.
   */
  WebRTCPeerMesh.prototype._connect = function (p) {
    var self = this;
    var peerId = p.id;
    var pc = new RTCPeerConnection(this.rtcConfig);
    p.pc = pc;
    p.makingOffer = false;
    p.offerAnswered = false; // an offer of this connection has been answered
    p.streamSet = new WeakSet();
    p.fallbackStream = null;
    function current() { return !p.closed && p.pc === pc; }

    pc.onnegotiationneeded = function () {
      self._offer(p, pc);
    };
    pc.onicecandidate = function (event) {
      // End of candidates (null) is not sent: some clients cannot take it.
      if (!current() || !event.candidate) return;
      self.client.sendIceCandidate(peerId, event.candidate);
    };
    pc.ontrack = function (event) {
      if (!current()) return;
      var stream = event.streams && event.streams[0];
      if (!stream) {
        stream = p.fallbackStream || (p.fallbackStream = new MediaStream());
        if (stream.getTracks().indexOf(event.track) < 0) stream.addTrack(event.track);
      }
      self._log('receiving ' + event.track.kind + ' from ' + peerId);
      self._emit('track', peerId, event.track, stream);
    };
    pc.onconnectionstatechange = function () {
      if (!current()) return;
      var state = pc.connectionState;
      self._log('connection with ' + peerId + ': ' + state);
      if (state === 'failed' && typeof pc.restartIce === 'function') {
        self._log('restarting ICE with ' + peerId);
        pc.restartIce();
      }
      self._emit('state', peerId, state);
    };

    if (this.localStream) this._attach(p, this.localStream);
    return pc;
  };

  /** Makes and sends an offer on pc (if it is still p's). */
  WebRTCPeerMesh.prototype._offer = function (p, pc) {
    var self = this;
    function current() { return !p.closed && p.pc === pc; }
    if (!current()) return;
    p.makingOffer = true;
    pc.setLocalDescription()
      .then(function () {
        if (!current()) return;
        var d = pc.localDescription;
        if (d && d.type === 'offer') {
          self._log('sending offer to ' + p.id);
          self.client.sendOffer(p.id, d);
        }
      })
      .catch(function (e) {
        if (current()) self._fail(p, 'creating an offer', e);
      })
      .then(function () {
        if (p.pc === pc) p.makingOffer = false;
      });
  };

  WebRTCPeerMesh.prototype._fail = function (p, what, e) {
    if (p.closed) return;
    this._log('error ' + what + ' with ' + p.id + ': ' + (e && e.name ? e.name + ': ' : '') + (e && e.message ? e.message : e));
    this._emit('error', p.id, e);
  };

  /** Messages of one peer are handled one after the other, in arrival order. */
  WebRTCPeerMesh.prototype._enqueue = function (peerId, kind, payload) {
    var p = this._peer(peerId);
    if (!p) return;
    var self = this;
    p.queue = p.queue
      .then(function () {
        if (p.closed) return undefined;
        return kind === 'description' ? self._onDescription(p, payload) : self._onCandidate(p, payload);
      })
      .catch(function (e) {
        self._fail(p, kind === 'description' ? 'applying a description' : 'adding a candidate', e);
      });
  };

  // W3C perfect negotiation (https://w3c.github.io/webrtc-pc/#perfect-negotiation-example)
  WebRTCPeerMesh.prototype._onDescription = function (p, description) {
    var self = this;
    var pc = p.pc;
    if (!description || (description.type !== 'offer' && description.type !== 'answer') || typeof description.sdp !== 'string') {
      this._log('ignoring a malformed description from ' + p.id);
      return undefined;
    }
    var readyForOffer = !p.makingOffer && (pc.signalingState === 'stable' || p.settingRemoteAnswer);
    var collision = description.type === 'offer' && !readyForOffer;
    p.ignoreOffer = !p.polite && collision;
    if (p.ignoreOffer) {
      this._log('offer collision with ' + p.id + ': ignoring their offer (we are impolite)');
      return undefined;
    }
    if (collision && !pc.currentLocalDescription && !pc.currentRemoteDescription) {
      // Both sides offer at once whenever a peer joins a room where both
      // have media. Chromium (seen in 156) mishandles the rollback of the
      // first offer a connection makes: at times the answer that follows
      // gets no ICE candidate (no call at all), or the tracks received
      // afterwards stay muted (no picture, although the packets arrive).
      // Before a first negotiation there is nothing to keep: start over
      // with a new connection, which answers.
      this._log('offer collision with ' + p.id + ' before the first negotiation: answering on a new connection (we are polite)');
      var old = pc;
      pc = this._connect(p);
      old.close();
    } else if (collision) {
      this._log('offer collision with ' + p.id + ': rolling back ours (we are polite)');
    }
    this._log('received ' + description.type + ' from ' + p.id);
    p.settingRemoteAnswer = description.type === 'answer';
    // Called in this task, before the negotiationneeded event that the
    // tracks of a new connection queue: the offer is taken up first and
    // they go out in the answer.
    return pc
      .setRemoteDescription({ type: description.type, sdp: description.sdp })
      .then(
        function () {
          p.settingRemoteAnswer = false;
          if (description.type === 'answer' && p.pc === pc) p.offerAnswered = true;
        },
        function (e) { p.settingRemoteAnswer = false; throw e; }
      )
      .then(function () {
        return self._flushCandidates(p);
      })
      .then(function () {
        if (description.type !== 'offer' || p.closed || p.pc !== pc) return undefined;
        return pc.setLocalDescription().then(function () {
          if (p.closed || p.pc !== pc) return;
          self._log('sending answer to ' + p.id);
          self.client.sendAnswer(p.id, pc.localDescription);
          if (p.polite && !p.offerAnswered) {
            // The rollback of a connection's first offer is what Chromium
            // mishandles (see above), and only the polite side rolls back:
            // make that first offer now, just after answering, when the
            // other side is least likely to be offering too.
            self._log('sending a first offer of our own to ' + p.id);
            self._offer(p, pc);
          }
        });
      });
  };

  WebRTCPeerMesh.prototype._onCandidate = function (p, candidate) {
    if (!candidate || typeof candidate !== 'object' || !candidate.candidate) return undefined; // end of candidates
    if (!p.pc.remoteDescription) {
      // Arrived before the description it belongs to: keep it for later.
      p.pendingCandidates.push(candidate);
      return undefined;
    }
    return this._addCandidate(p, candidate);
  };

  WebRTCPeerMesh.prototype._addCandidate = function (p, candidate) {
    var self = this;
    if (isStaleCandidate(p.pc, candidate)) {
      this._log('dropping a candidate from ' + p.id + ' of another ICE session (ufrag ' + candidate.usernameFragment + ')');
      return Promise.resolve();
    }
    return p.pc.addIceCandidate(candidate).catch(function (e) {
      if (!p.ignoreOffer) self._fail(p, 'adding a candidate', e);
    });
  };

  WebRTCPeerMesh.prototype._flushCandidates = function (p) {
    var pc = p.pc;
    var list = p.pendingCandidates;
    p.pendingCandidates = [];
    var self = this;
    // Early candidates of an offer we ignored (offer collision, we are
    // impolite) wait here too; the answer that follows has other ICE
    // credentials, and Firefox refuses them ("Unknown ufrag").
    var fresh = list.filter(function (c) { return !isStaleCandidate(pc, c); });
    if (fresh.length < list.length) {
      this._log('dropping ' + (list.length - fresh.length) + ' early candidate(s) from ' + p.id + ' of another ICE session');
    }
    if (fresh.length) this._log('applying ' + fresh.length + ' early candidate(s) from ' + p.id);
    return fresh.reduce(function (chain, c) {
      return chain.then(function () { return self._addCandidate(p, c); });
    }, Promise.resolve());
  };

  /** The ICE user fragments (a=ice-ufrag) of the remote description. */
  function remoteUfrags(pc) {
    var d = pc.remoteDescription;
    if (!d || typeof d.sdp !== 'string') return [];
    return d.sdp.split(/\r?\n/).filter(function (line) {
      return line.indexOf('a=ice-ufrag:') === 0;
    }).map(function (line) {
      return line.slice('a=ice-ufrag:'.length).trim();
    });
  }

  /**
   * Whether a candidate names an ICE session the remote description does not
   * have (candidates without usernameFragment are taken as current).
   */
  function isStaleCandidate(pc, candidate) {
    var ufrag = candidate.usernameFragment;
    if (typeof ufrag !== 'string' || ufrag === '') return false;
    var current = remoteUfrags(pc);
    return current.length > 0 && current.indexOf(ufrag) < 0;
  }

  /**
   * Sends the tracks of `stream` to every peer (null: stop sending). The same
   * transceivers are reused, so start/stop cycles do not grow the session.
   */
  WebRTCPeerMesh.prototype.setLocalStream = function (stream) {
    var self = this;
    this.localStream = stream || null;
    this.peers.forEach(function (p) {
      if (stream) self._attach(p, stream);
      else self._detach(p);
    });
  };

  WebRTCPeerMesh.prototype._attach = function (p, stream) {
    var self = this;
    var pc = p.pc;
    var msid = this._sendStream || stream;
    if (p.closed || pc.signalingState === 'closed') return;
    var used = [];
    stream.getTracks().forEach(function (track) {
      var t = pc.getTransceivers().find(function (tr) {
        return !tr.stopped && tr.currentDirection !== 'stopped' && used.indexOf(tr) < 0 &&
          tr.receiver.track && tr.receiver.track.kind === track.kind &&
          (tr.sender.track === null || tr.sender.track === track);
      });
      if (t) {
        used.push(t);
        if (t.sender.track !== track) {
          t.sender.replaceTrack(track).catch(function (e) { self._fail(p, 'replacing a track', e); });
        }
        if (!p.streamSet.has(t.sender) && typeof t.sender.setStreams === 'function') {
          t.sender.setStreams(msid);
          p.streamSet.add(t.sender);
        }
        if (t.direction === 'recvonly' || t.direction === 'inactive') t.direction = 'sendrecv';
      } else {
        var sender = pc.addTrack(track, msid);
        p.streamSet.add(sender);
        used.push(pc.getTransceivers().find(function (tr) { return tr.sender === sender; }));
      }
    });
  };

  WebRTCPeerMesh.prototype._detach = function (p) {
    var self = this;
    var pc = p.pc;
    if (p.closed || pc.signalingState === 'closed') return;
    pc.getTransceivers().forEach(function (t) {
      if (t.stopped || !t.sender.track) return;
      t.sender.replaceTrack(null).catch(function (e) { self._fail(p, 'removing a track', e); });
      if (t.direction === 'sendrecv') t.direction = 'recvonly';
      else if (t.direction === 'sendonly') t.direction = 'inactive';
    });
  };

  /**
   * Sends newTrack wherever oldTrack is sent (a camera switch): the same
   * transceivers, so no renegotiation. Resolves when every peer has it.
   */
  WebRTCPeerMesh.prototype.replaceTrack = function (oldTrack, newTrack) {
    var self = this;
    var pending = [];
    this.peers.forEach(function (p) {
      if (p.closed) return;
      p.pc.getSenders().forEach(function (sender) {
        if (sender.track !== oldTrack) return;
        pending.push(sender.replaceTrack(newTrack).catch(function (e) { self._fail(p, 'replacing a track', e); }));
      });
    });
    return Promise.all(pending).then(function () {});
  };

  // A module system (CommonJS, a bundler, the ES module build) gets exports and
  // no globals; a classic <script> gets the two globals.
  if (typeof module !== 'undefined' && module && module.exports) {
    module.exports = { WebRTCSignalingClient: WebRTCSignalingClient, WebRTCPeerMesh: WebRTCPeerMesh };
  } else {
    root.WebRTCSignalingClient = WebRTCSignalingClient;
    root.WebRTCPeerMesh = WebRTCPeerMesh;
  }
})(typeof window !== 'undefined' ? window : typeof globalThis !== 'undefined' ? globalThis : this);
