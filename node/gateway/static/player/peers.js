// The viewer swarm in the browser: signaling through the node's hub and one
// RTCPeerConnection per peer, speaking the data-channel protocol specified in
// node/swarm/viewers/protocol.py (messages checked by codec.js, constants from
// contract.json). Which piece to ask whom is the Picker's
// business; checking a piece is the caller's (`acceptPiece`).
// Byte counts go to the hub in the same "stats" message the Python viewer
// sends: per membership, HTTP bytes, and per peer id the bytes of new
// verified pieces got from it and of whole pieces sent to it.

import { bitfield, decodePeerMessage, indicesIn, packMessage, unpackMessage, wire } from "./codec.js";

const WANTED_CONNECTIONS = 4; // open connections below which the page asks the hub for more peers

export class ViewerSwarm {
  // hooks: {picker, pieceSize(i), getPiece(i) -> Uint8Array|null,
  //         acceptPiece(i, bytes, peer) -> Promise<"kept"|"duplicate"|"bad">, changed(), welcomed()}:
  //         acceptPiece verifies and keeps a piece ("duplicate": verified, but already held); changed() is
  //         told when peers come or go, welcomed() when the hub has said who else watches;
  //         maxOffers (optional): connections this page offers, at most (it still answers others' offers).
  constructor(gateway, cid, count, hooks) {
    this.url = gateway.replace(/^http/, "ws") + `/api/v1/swarm/${cid}`;
    this.count = count;
    this.hooks = hooks;
    this.picker = hooks.picker;
    this.connections = new Map(); // peer id -> connection
    this.dropped = new Set(); // peers that misbehaved: never again this session
    this.myId = null;
    this.iceServers = [];
    this.socket = null;
    this.lastMorePeers = 0;
    this.closed = false;
    // What this membership reports to the hub: HTTP bytes (the page adds them, addHttp), and per peer
    // id the bytes got from it and sent to it, with the peers whose count changed since the last report.
    this.http = 0;
    this.reportedHttp = 0;
    this.got = new Map();
    this.sent = new Map();
    this.unreported = { got: new Set(), sent: new Set() };
    this.haveDirty = false;
    this.timer = null;
    this.connecting = false;
    this.held = []; // introductions waiting for connect()
    this.rejects = 0; // requests peers refused (not held, or busy), for benchmarks' traces
  }

  start() {
    const socket = new WebSocket(this.url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => this._signal({ t: "join", have: bitfield(this.picker.have) });
    socket.onmessage = (event) => {
      try {
        this._fromHub(unpackMessage(event.data));
      } catch (err) {
        console.warn("medianode: bad message from the hub", err);
      }
    };
    socket.onclose = () => {
      this.socket = null;
    };
    this.timer = setInterval(() => this._tick(), wire.stats_every_ms);
  }

  close() {
    this.closed = true;
    clearInterval(this.timer);
    this._reportStats(); // the last counts, before the socket goes
    for (const id of [...this.connections.keys()]) this._close(id);
    if (this.socket) this.socket.close();
  }

  openPeers() {
    let n = 0;
    for (const c of this.connections.values()) if (c.open) n++;
    return n;
  }

  // A piece was verified here: tell the peers.
  announce(index) {
    for (const c of this.connections.values()) if (c.open) this._send(c, { t: "have", i: index });
    this.haveDirty = true;
  }

  // HTTP bytes of the clip for this membership to report.
  addHttp(bytes) {
    this.http += bytes;
  }

  _countPeer(kind, id, bytes) {
    this[kind].set(id, (this[kind].get(id) || 0) + bytes);
    this.unreported[kind].add(id);
  }

  request(peerId, index) {
    const c = this.connections.get(peerId);
    if (!c || !c.open) return false;
    c.incoming.set(index, { bytes: new Uint8Array(this.hooks.pieceSize(index)), got: 0 });
    c.cancelled.delete(index);
    this._send(c, { t: "request", i: index });
    return true;
  }

  cancel(peerId, index) {
    const c = this.connections.get(peerId);
    if (!c) return;
    c.incoming.delete(index);
    c.cancelled.add(index); // chunks already on the way are not the peer's fault
    if (c.open) this._send(c, { t: "cancel", i: index });
  }

  // ------------------------------------------------------------ signaling

  _signal(message) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(packMessage(message));
    return true;
  }

  // Stats, once the hub has let us in and something changed; peers past max_stats_peers wait for the next.
  _reportStats() {
    if (!this.myId || !this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    if (this.http === this.reportedHttp && !this.unreported.got.size && !this.unreported.sent.size) return;
    const take = (kind) => {
      const out = {};
      for (const id of [...this.unreported[kind]].slice(0, wire.max_stats_peers)) {
        out[id] = this[kind].get(id);
        this.unreported[kind].delete(id);
      }
      return out;
    };
    if (this._signal({ t: "stats", http: this.http, got: take("got"), sent: take("sent") })) {
      this.reportedHttp = this.http;
    }
  }

  _tick() {
    this._reportStats();
    if (this.haveDirty) {
      this._signal({ t: "have", have: bitfield(this.picker.have) });
      this.haveDirty = false;
    }
    const now = Date.now();
    if (this.connecting && this.openPeers() < WANTED_CONNECTIONS && now - this.lastMorePeers > wire.ask_peers_every_ms) {
      this.lastMorePeers = now;
      this._signal({ t: "peers" });
    }
  }

  _fromHub(message) {
    if (message.t === "welcome") {
      this.myId = message.id;
      this.iceServers = (message.ice || []).map((url) => ({ urls: url }));
      this.lastMorePeers = Date.now();
      this._introduced(message.peers);
      this.hooks.welcomed();
    } else if (message.t === "peers") {
      this._introduced(message.peers);
    } else if (message.t === "signal") {
      this._fromPeerSignal(message.from, message.data).catch((err) => {
        console.warn("medianode: signaling with", message.from, "failed", err);
        this._close(message.from);
      });
    } else if (message.t === "error") {
      console.warn("medianode: hub refused:", message.reason);
    }
  }

  // Offers go out once `connect()` was called: the page holds them back until
  // its first frame is shown, so setting up connections does not slow that.
  connect() {
    this.connecting = true;
    this._introduced(this.held.splice(0));
  }

  _introduced(peers) {
    if (!this.connecting) {
      this.held.push(...(peers || []));
      for (const { id, have } of peers || []) this._hint(id, have);
      return;
    }
    for (const { id, have } of peers || []) {
      if (id === this.myId || this.connections.has(id) || this.dropped.has(id)) continue;
      if (this.connections.size >= (this.hooks.maxOffers ?? wire.max_peer_connections)) break;
      const c = this._connection(id, true);
      this._hint(id, have);
      this._offer(c).catch(() => this._close(id));
    }
  }

  // What the hub says a peer has: urgent pieces wait a little for it rather than go to HTTP.
  _hint(id, have) {
    if (id === this.myId || this.dropped.has(id)) return;
    this.picker.addPeer(id);
    try {
      this.picker.peerHas(id, indicesIn(have, this.count));
    } catch {
      // a bad bitfield from the hub only costs us the hint
    }
  }

  async _offer(c) {
    const offer = await c.pc.createOffer();
    await c.pc.setLocalDescription(offer);
    this._signal({ t: "signal", to: c.id, data: { type: offer.type, sdp: offer.sdp } });
  }

  async _fromPeerSignal(from, data) {
    if (this.dropped.has(from) || this.closed) return;
    let c = this.connections.get(from);
    if (data.type === "offer") {
      if (c && c.initiator) {
        // Both offered at once: the lower id keeps its offer, the other answers.
        if (this.myId < from) return;
        this._close(from, false);
        c = null;
      }
      if (!c) {
        if (this.connections.size >= wire.max_peer_connections) return;
        c = this._connection(from, false);
      }
      await c.pc.setRemoteDescription({ type: "offer", sdp: String(data.sdp) });
      await this._flushCandidates(c);
      const answer = await c.pc.createAnswer();
      await c.pc.setLocalDescription(answer);
      this._signal({ t: "signal", to: from, data: { type: answer.type, sdp: answer.sdp } });
    } else if (data.type === "answer" && c && c.initiator) {
      await c.pc.setRemoteDescription({ type: "answer", sdp: String(data.sdp) });
      await this._flushCandidates(c);
    } else if (typeof data.candidate === "string" && c) {
      const candidate = { candidate: data.candidate, sdpMid: data.sdpMid ?? null, sdpMLineIndex: data.sdpMLineIndex ?? null };
      if (c.pc.remoteDescription) await c.pc.addIceCandidate(candidate);
      else if (c.pendingCandidates.length < 64) c.pendingCandidates.push(candidate);
    }
  }

  async _flushCandidates(c) {
    for (const candidate of c.pendingCandidates.splice(0)) await c.pc.addIceCandidate(candidate);
  }

  // ------------------------------------------------------------ connections

  _connection(id, initiator) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const c = { id, pc, dc: null, initiator, open: false, incoming: new Map(), cancelled: new Set(), queue: [],
                sending: null, pendingCandidates: [] }; // prettier-ignore
    this.connections.set(id, c);
    this.picker.addPeer(id);
    pc.onicecandidate = (event) => {
      if (event.candidate && event.candidate.candidate) {
        const { candidate, sdpMid, sdpMLineIndex } = event.candidate;
        this._signal({ t: "signal", to: id, data: { candidate, sdpMid, sdpMLineIndex } });
      }
    };
    pc.onconnectionstatechange = () => {
      if (["failed", "closed"].includes(pc.connectionState)) this._close(id);
    };
    if (initiator) this._channel(c, pc.createDataChannel(wire.data_channel_label, { ordered: true }));
    else pc.ondatachannel = (event) => event.channel.label === wire.data_channel_label && this._channel(c, event.channel);
    c.timeout = setTimeout(() => {
      if (!c.open) this._close(id);
    }, wire.connect_timeout_ms);
    return c;
  }

  _channel(c, dc) {
    c.dc = dc;
    dc.binaryType = "arraybuffer";
    dc.bufferedAmountLowThreshold = wire.channel_low_water_bytes;
    dc.onopen = () => {
      c.open = true;
      clearTimeout(c.timeout);
      this._send(c, { t: "have", have: bitfield(this.picker.have) });
      this.picker.peerReady(c.id);
      this.hooks.changed();
    };
    dc.onclose = () => this._close(c.id);
    dc.onbufferedamountlow = () => this._pump(c);
    dc.onmessage = (event) => {
      try {
        this._fromPeer(c, decodePeerMessage(event.data, this.count));
      } catch (err) {
        this.drop(c.id, `malformed message: ${err.message}`);
      }
    };
  }

  _send(c, message) {
    try {
      c.dc.send(packMessage(message));
    } catch {
      this._close(c.id);
    }
  }

  // A peer broke the protocol or sent bad bytes: never again this session.
  drop(id, reason) {
    console.warn("medianode: dropping peer", id, reason);
    this.dropped.add(id);
    this._close(id);
  }

  _close(id, notify = true) {
    const c = this.connections.get(id);
    if (!c) return;
    this.connections.delete(id);
    clearTimeout(c.timeout);
    c.open = false;
    try {
      c.pc.close();
    } catch {
      // already closed
    }
    this.picker.removePeer(id);
    if (notify) this.hooks.changed();
  }

  _fromPeer(c, message) {
    if (this.connections.get(c.id) !== c) return; // closed: what was still queued does not count
    const index = message.i;
    switch (message.t) {
      case "have":
        this.picker.peerHas(c.id, message.pieces ?? [index]);
        this.hooks.changed();
        return;
      case "request":
        if (c.queue.length >= wire.max_outstanding_requests || !this.hooks.getPiece(index)) {
          this._send(c, { t: "reject", i: index });
        } else {
          c.queue.push(index);
          this._pump(c);
        }
        return;
      case "cancel":
        c.queue = c.queue.filter((i) => i !== index);
        if (c.sending && c.sending.index === index) c.sending = null;
        return;
      case "reject":
        this.rejects++;
        if (c.incoming.delete(index)) this.picker.peerLacks(c.id, index);
        return;
      case "piece":
        this._chunk(c, index, message.o, message.d);
        return;
    }
  }

  _chunk(c, index, offset, data) {
    if (c.cancelled.has(index)) {
      this.picker.stale(c.id, Date.now());
      return;
    }
    const piece = c.incoming.get(index);
    if (!piece || !(data instanceof Uint8Array) || !this.picker.progress(c.id, index, Date.now(), data.length)) {
      this.drop(c.id, `piece ${index} was not asked for`);
      return;
    }
    if (offset !== piece.got || piece.got + data.length > piece.bytes.length || !data.length) {
      this.drop(c.id, `piece ${index} chunk at ${offset} out of order or too long`);
      return;
    }
    piece.bytes.set(data, offset);
    piece.got += data.length;
    if (piece.got < piece.bytes.length) return;
    c.incoming.delete(index);
    this.hooks.acceptPiece(index, piece.bytes, c.id).then((verdict) => {
      if (verdict === "bad") this.drop(c.id, `piece ${index} does not match its CID`);
      else if (verdict === "kept") this._countPeer("got", c.id, piece.bytes.length);
    });
  }

  // Send queued pieces while the channel's buffer has room.
  _pump(c) {
    while (c.open && c.dc.bufferedAmount < wire.channel_high_water_bytes) {
      if (!c.sending) {
        const index = c.queue.shift();
        if (index === undefined) return;
        const bytes = this.hooks.getPiece(index);
        if (!bytes) {
          this._send(c, { t: "reject", i: index });
          continue;
        }
        c.sending = { index, bytes, offset: 0 };
      }
      const s = c.sending;
      const end = Math.min(s.offset + wire.piece_chunk_bytes, s.bytes.length);
      this._send(c, { t: "piece", i: s.index, o: s.offset, d: s.bytes.subarray(s.offset, end) });
      s.offset = end;
      if (s.offset >= s.bytes.length) {
        this._countPeer("sent", c.id, s.bytes.length);
        c.sending = null;
      }
    }
  }
}
