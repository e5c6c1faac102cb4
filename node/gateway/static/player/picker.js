// The browser's piece picker: which piece to ask of which peer, and when to
// give up on peers and use HTTP. Pure bookkeeping with no I/O, driven by
// `plan(now, view)`, which returns actions for the caller to carry out.
//
// A viewer plays a clip from start to end, so pieces are wanted in order
// from the play position on (then the ones before it, to seed them). Peers
// are asked first, up to MAX_OUTSTANDING requests each, least loaded peer
// first. HTTP serves only what playback needs soon and peers cannot give in
// time: a piece becomes *urgent* when playback will reach it within a short
// horizon (the caller passes `urgentBefore`, a piece index) or when the
// element is stalled on it; an urgent piece goes to HTTP at once if no peer
// has it, or after PEER_PATIENCE ms if a peer has it but has not delivered.
// That keeps time to first frame and seeks as fast as plain HTTP while later
// viewers take nearly every piece from earlier ones.

import { wire } from "./codec.js";

export const MAX_OUTSTANDING = wire.max_outstanding_requests;
export const REQUEST_TIMEOUT = wire.request_timeout_ms; // without progress before a peer request is given up
export const PEER_PATIENCE = wire.peer_patience_ms; // an urgent piece waits on peers before HTTP
export const HTTP_PARALLEL = wire.http_parallel_fetches;
export const MAX_STRIKES = wire.max_request_timeouts_per_peer; // after which a peer is asked nothing more

export class Picker {
  constructor(count) {
    this.count = count;
    this.have = new Uint8Array(count);
    this.peers = new Map(); // id -> {has: Uint8Array, load, strikes}
    this.inflight = new Map(); // index -> {source: "peer"|"http", peer, since, touched}
    this.urgentSince = new Map(); // index -> when it first became urgent
    this.httpActive = 0;
  }

  // A peer being connected to: what the hub said it has counts (urgent pieces
  // wait PEER_PATIENCE for it) but it is asked nothing until `peerReady`.
  addPeer(id) {
    if (!this.peers.has(id)) this.peers.set(id, { has: new Uint8Array(this.count), load: 0, strikes: 0, ready: false });
  }

  peerReady(id) {
    const peer = this.peers.get(id);
    if (peer) peer.ready = true;
  }

  removePeer(id) {
    this.peers.delete(id);
    for (const [index, flight] of this.inflight) {
      if (flight.source === "peer" && flight.peer === id) this.inflight.delete(index);
    }
  }

  peerHas(id, indices) {
    const peer = this.peers.get(id);
    if (!peer) return;
    for (const i of indices) peer.has[i] = 1;
  }

  // A peer sent part of a piece it was asked for; false if it was not asked.
  progress(id, index, now) {
    const flight = this.inflight.get(index);
    if (!flight || flight.source !== "peer" || flight.peer !== id) return false;
    flight.touched = now;
    return true;
  }

  // A piece was verified (from a peer or HTTP).
  received(index) {
    this._finish(index);
    this.have[index] = 1;
    this.urgentSince.delete(index);
  }

  // A request ended without the piece (reject, bad bytes, HTTP error).
  failed(index) {
    this._finish(index);
  }

  missing() {
    let n = 0;
    for (let i = 0; i < this.count; i++) if (!this.have[i]) n++;
    return n;
  }

  // view: {playIndex, urgentBefore, stalledOn: Set of indices, holdHttpUntil: time or 0}
  plan(now, view) {
    const actions = [];
    for (const [index, flight] of this.inflight) {
      if (flight.source === "peer" && now - flight.touched > REQUEST_TIMEOUT) {
        actions.push({ kind: "cancel", peer: flight.peer, index, reason: "timeout" });
        const peer = this.peers.get(flight.peer);
        if (peer) peer.strikes++;
        this._finish(index);
      }
    }
    const order = [];
    for (let i = view.playIndex; i < this.count; i++) order.push(i);
    for (let i = 0; i < Math.min(view.playIndex, this.count); i++) order.push(i);
    for (const index of order) {
      if (this.have[index]) continue;
      const urgent = index < view.urgentBefore || view.stalledOn.has(index);
      if (urgent && !this.urgentSince.has(index)) this.urgentSince.set(index, now);
      const flight = this.inflight.get(index);
      // Patience counts from when the piece became urgent or was asked for, whichever is later.
      const waitingSince = Math.max(this.urgentSince.get(index) ?? now, flight ? flight.since : 0);
      const impatient = view.stalledOn.has(index) || (urgent && now - waitingSince > PEER_PATIENCE);
      if (flight) {
        if (flight.source === "peer" && urgent && impatient && this.httpActive < HTTP_PARALLEL) {
          actions.push({ kind: "cancel", peer: flight.peer, index, reason: "too slow for playback" });
          this._finish(index);
          this._startHttp(index, now, actions);
        }
        continue;
      }
      const peer = this._bestPeer(index);
      if (peer !== null && !(urgent && impatient)) {
        this.inflight.set(index, { source: "peer", peer, since: now, touched: now });
        this.peers.get(peer).load++;
        actions.push({ kind: "request", peer, index });
      } else if (urgent && (peer === null ? !this._anyPeerHas(index) || impatient : impatient)) {
        // Just joined and not yet told who else watches: only what the element waits on goes to HTTP.
        const holding = now < (view.holdHttpUntil ?? 0) && !view.stalledOn.has(index);
        if (this.httpActive < HTTP_PARALLEL && !holding) this._startHttp(index, now, actions);
      }
    }
    return actions;
  }

  _startHttp(index, now, actions) {
    this.inflight.set(index, { source: "http", since: now, touched: now });
    this.httpActive++;
    actions.push({ kind: "http", index });
  }

  _finish(index) {
    const flight = this.inflight.get(index);
    if (!flight) return;
    this.inflight.delete(index);
    if (flight.source === "http") this.httpActive--;
    else {
      const peer = this.peers.get(flight.peer);
      if (peer) peer.load--;
    }
  }

  _anyPeerHas(index) {
    for (const peer of this.peers.values()) if (peer.has[index]) return true;
    return false;
  }

  // The ready peer holding the piece with the fewest timeouts, then the fewest requests outstanding.
  _bestPeer(index) {
    let best = null;
    let bestKey = Infinity;
    for (const [id, peer] of this.peers) {
      if (!peer.ready || !peer.has[index] || peer.load >= MAX_OUTSTANDING || peer.strikes >= MAX_STRIKES) continue;
      const key = peer.strikes * (MAX_OUTSTANDING + 1) + peer.load;
      if (key < bestKey) {
        best = id;
        bestKey = key;
      }
    }
    return best;
  }
}
