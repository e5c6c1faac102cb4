// The browser's fetch policy: which piece to ask of which peer, and which to
// take over HTTP, decided from deadlines. Pure bookkeeping with no I/O and no
// clock of its own, driven by `plan(now, view)`, which returns actions for
// the caller to carry out (and tested under Node.js, tests/js/picker.test.mjs).
//
// The caller says, per piece, by when it is needed (`view.deadline(i)`, in the
// same milliseconds as `now`): the media element's play position and rate
// give that for the clip on screen, a predicted swipe for a clip the feed
// prefetches, `now` itself for what the element waits on (it is stalled, or
// has shown no frame yet), Infinity for what nothing waits for (a piece
// behind the play position, a clip not yet on screen). The picker then
//
//  - asks a peer for a piece when a ready peer that announced it can deliver
//    it before its deadline: the peer whose estimated arrival is soonest, from
//    the bytes already asked of it and its measured rate, at most
//    MAX_OUTSTANDING requests per peer;
//  - takes a piece over HTTP only when its deadline is closer than what HTTP
//    needs to bring it plus a margin (`httpLead`) and no peer can bring it in
//    time; a piece that is due now (the element waits on it) goes to HTTP at
//    once, so the first frame and a stall never wait for peers;
//  - watches every peer request: when the peer's progress says it will miss
//    the piece's deadline, the request is re-issued before the deadline to a
//    peer that can make it, or to HTTP when none can and the lead is reached;
//    a request with no progress from its peer for REQUEST_TIMEOUT counts as a
//    strike, and a peer with MAX_STRIKES is asked nothing more.
//
// Every HTTP action carries its reason ("due now", "no peer has it", "peers
// busy", "peer too slow"), which the player keeps as a trace for benchmarks.

import { wire } from "./codec.js";

export const MAX_OUTSTANDING = wire.max_outstanding_requests;
export const REQUEST_TIMEOUT = wire.request_timeout_ms; // without progress before a peer request is given up
export const HTTP_PARALLEL = wire.http_parallel_fetches;
export const MAX_STRIKES = wire.max_request_timeouts_per_peer; // after which a peer is asked nothing more

export const PIECE_BYTES = 262144; // the size assumed for a piece whose size the caller did not give
export const PEER_RATE = 2000; // bytes/ms assumed of a peer not yet measured (2 MB/s: well below loopback's 12-16)
export const PEER_LATENCY = 40; // ms from a request to its first chunk, assumed on top of the bytes ahead of it
export const HTTP_TOOK = 150; // ms a piece over HTTP is assumed to take (request to verified) until measured
export const MARGIN = 1000; // ms a piece must arrive before its deadline: the element still demuxes and decodes it
export const AHEAD_OF_SWARM = 1500; // ms earlier a piece no peer has goes to HTTP
export const STALLED_PEER = 800; // ms without a chunk from a peer that owes some: its estimates count as late
const RATE_WINDOW = 100; // ms over which a peer's rate is sampled
const MAX_RATE = 100000; // bytes/ms: a sample above this is a burst, not a rate
const ALPHA = 0.3; // weight of a new sample

export class Picker {
  // sizes: bytes per piece (an array; default PIECE_BYTES each).
  constructor(count, sizes = null) {
    this.count = count;
    this.sizes = sizes ? Array.from(sizes) : new Array(count).fill(PIECE_BYTES);
    this.have = new Uint8Array(count);
    this.peers = new Map(); // id -> {has, load, owed, strikes, ready, rate, lastChunk, measured, cancelled}
    this.inflight = new Map(); // index -> {source: "peer"|"http", peer, since, touched, got, expectedBy}
    this.httpActive = 0;
    this.httpTook = HTTP_TOOK;
  }

  // A peer being connected to: what the hub said it has counts (a piece with a holder waits for it until
  // the lead) but it is asked nothing until `peerReady`.
  addPeer(id) {
    if (!this.peers.has(id)) {
      this.peers.set(id, { has: new Uint8Array(this.count), load: 0, owed: 0, strikes: 0, ready: false,
                           rate: PEER_RATE, acc: 0, accFrom: 0, lastChunk: 0,
                           cancelled: new Uint8Array(this.count) }); // prettier-ignore
    }
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

  // The peer said it does not have the piece (a reject): forget it had it, free the request.
  peerLacks(id, index) {
    const peer = this.peers.get(id);
    if (peer) peer.has[index] = 0;
    const flight = this.inflight.get(index);
    if (flight && flight.source === "peer" && flight.peer === id) this._finish(index);
  }

  // `bytes` of a piece arrived from a peer that was asked for it; false if it was not asked.
  progress(id, index, now, bytes = 0) {
    const flight = this.inflight.get(index);
    if (!flight || flight.source !== "peer" || flight.peer !== id) return false;
    const peer = this.peers.get(id);
    // The rate: bytes over time while the peer owed us something, sampled every RATE_WINDOW ms.
    peer.acc += bytes;
    if (now - peer.accFrom >= RATE_WINDOW) {
      const sample = Math.min(MAX_RATE, peer.acc / (now - peer.accFrom));
      peer.rate = peer.rate * (1 - ALPHA) + sample * ALPHA;
      peer.acc = 0;
      peer.accFrom = now;
    }
    peer.lastChunk = now;
    peer.owed = Math.max(0, peer.owed - bytes);
    flight.got += bytes;
    flight.touched = now;
    return true;
  }

  // A chunk of a piece cancelled on peer `id` arrived (its send was under way): the peer is moving, working
  // through what it had queued before our next request, so that request's clock starts again. Not counting
  // them struck out peers that were sending what a re-issue had cancelled: up to a channel's worth of buffered
  // chunks (1 MiB) came first, which on a saturated machine took 4 s.
  stale(id, now) {
    const peer = this.peers.get(id);
    if (peer && peer.load > 0) peer.lastChunk = now;
  }

  // A piece was verified (from a peer or HTTP). For HTTP, `now` measures how long the gateway takes.
  received(index, now = null) {
    const flight = this.inflight.get(index);
    if (flight && flight.source === "http" && now !== null && now >= flight.since) {
      this.httpTook = this.httpTook * (1 - ALPHA) + Math.min(now - flight.since, 5000) * ALPHA;
    }
    this._finish(index);
    this.have[index] = 1;
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

  // How long before its deadline a piece must go to HTTP: what a fetch takes (measured), plus the margin.
  httpLead() {
    return this.httpTook + MARGIN;
  }

  // When a new request for `index` to `peer` would arrive.
  _peerEta(peer, index, now) {
    const late = peer.load > 0 && now - Math.max(peer.lastChunk, this._oldestAsk(peer)) > STALLED_PEER;
    if (late) return Infinity;
    return now + PEER_LATENCY + (peer.owed + this.sizes[index]) / peer.rate;
  }

  _oldestAsk(peer) {
    let oldest = Infinity;
    for (const flight of this.inflight.values()) {
      if (flight.source === "peer" && this.peers.get(flight.peer) === peer) oldest = Math.min(oldest, flight.since);
    }
    return oldest === Infinity ? 0 : oldest;
  }

  // When an open peer request will be done: the bytes still owed ahead of and in it, at the peer's rate.
  _flightEta(flight, now) {
    const peer = this.peers.get(flight.peer);
    if (!peer) return Infinity;
    if (now - Math.max(peer.lastChunk, flight.since) > STALLED_PEER) return Infinity;
    return now + peer.owed / peer.rate;
  }

  // view: {playIndex: where play order starts, deadline(i) -> ms|Infinity, wantBefore: pieces at or past it
  //        are not fetched at all (default: all are), httpAllowed: false keeps HTTP to what is due now,
  //        extraLead: ms added to HTTP's lead (a player with no peers to wait for fetches further ahead),
  //        peersKnown: false while the hub has not said who watches (no piece counts as nobody's yet),
  //        fetchBefore: a time: pieces due later are not asked for at all yet}
  plan(now, view) {
    const actions = [];
    const wantBefore = Math.min(this.count, view.wantBefore ?? this.count);
    for (const [index, flight] of this.inflight) {
      if (flight.source === "peer" && this._timedOut(flight, now)) {
        actions.push({ kind: "cancel", peer: flight.peer, index, reason: "timeout" });
        const peer = this.peers.get(flight.peer);
        if (peer) peer.strikes++;
        this._cancelled(flight.peer, index);
      }
    }
    const extraLead = view.extraLead ?? 0;
    const start = Math.min(view.playIndex ?? 0, wantBefore);
    for (let n = 0; n < wantBefore; n++) {
      const index = n < wantBefore - start ? start + n : n - (wantBefore - start);
      if (this.have[index]) continue;
      const deadline = view.deadline ? view.deadline(index) : Infinity;
      if (view.fetchBefore !== undefined && deadline > view.fetchBefore && !this.inflight.has(index)) continue;
      const dueNow = deadline <= now;
      const httpTime = deadline - this.httpLead() - extraLead <= now; // HTTP must start now or be late
      // A piece no peer has goes AHEAD_OF_SWARM earlier: viewers just behind this one then take it from
      // this one instead of each fetching it from HTTP a moment later.
      const orphanTime = deadline - this.httpLead() - extraLead - AHEAD_OF_SWARM <= now;
      const flight = this.inflight.get(index);
      if (flight) {
        if (flight.source === "http" || deadline === Infinity) continue;
        const eta = this._flightEta(flight, now);
        if (dueNow ? eta <= now + this.httpTook : eta + MARGIN <= deadline) continue;
        // This request will miss its deadline: to a peer that can make it, else to HTTP once it is time.
        const other = this._bestPeer(index, now, flight.peer);
        if (other && other.eta + MARGIN <= deadline && !dueNow) {
          actions.push({ kind: "cancel", peer: flight.peer, index, reason: "re-issued" });
          this._cancelled(flight.peer, index);
          this._startPeer(other.id, index, now, actions);
        } else if (dueNow ? this.httpActive < HTTP_PARALLEL : httpTime && this._httpRoom()) {
          actions.push({ kind: "cancel", peer: flight.peer, index, reason: "too slow for playback" });
          this._cancelled(flight.peer, index);
          this._startHttp(index, now, actions, dueNow ? "due now" : "peer too slow");
        }
        continue;
      }
      const best = dueNow ? null : this._bestPeer(index, now, null);
      if (best && (deadline === Infinity || best.eta + MARGIN <= deadline || !httpTime)) {
        this._startPeer(best.id, index, now, actions);
        continue;
      }
      const held = this._anyPeerHas(index);
      const orphan = !held && view.peersKnown !== false;
      const ahead = (orphan ? orphanTime : httpTime) && view.httpAllowed !== false && this._httpRoom();
      if (dueNow ? this.httpActive < HTTP_PARALLEL : ahead) {
        this._startHttp(index, now, actions, dueNow ? "due now" : held ? "peers busy" : "no peer has it");
      }
    }
    return actions;
  }

  // A sender works through one peer's requests in order, so a request queued behind others shows no progress of
  // its own while the peer sends those: it times out once neither it nor its peer has moved for REQUEST_TIMEOUT,
  // or when it has been open MAX_OUTSTANDING timeouts in all (a peer that sends, but never this piece). Timing
  // out queued requests struck out busy senders: on a saturated machine late viewers struck out 5-7 of their
  // 8-9 peers and took half the clip over HTTP.
  _timedOut(flight, now) {
    const peer = this.peers.get(flight.peer);
    const moved = Math.max(flight.touched, peer ? peer.lastChunk : 0);
    return now - moved > REQUEST_TIMEOUT || now - flight.since > MAX_OUTSTANDING * REQUEST_TIMEOUT;
  }

  // HTTP for what is not yet due leaves one fetch free for what the element waits on.
  _httpRoom() {
    return this.httpActive < HTTP_PARALLEL - 1;
  }

  _startPeer(id, index, now, actions) {
    const peer = this.peers.get(id);
    if (peer.load === 0) {
      peer.acc = 0;
      peer.accFrom = now;
    }
    this.inflight.set(index, { source: "peer", peer: id, since: now, touched: now, got: 0 });
    peer.load++;
    peer.owed += this.sizes[index];
    actions.push({ kind: "request", peer: id, index });
  }

  _startHttp(index, now, actions, reason) {
    this.inflight.set(index, { source: "http", since: now, touched: now, got: 0 });
    this.httpActive++;
    actions.push({ kind: "http", index, reason });
  }

  // A peer request given up: that peer is never asked for the piece again. Its chunks of the cancelled send may
  // still be on the way, and a new request's chunks could not be told from them (the peer would look as if it
  // sent out of order, and be dropped).
  _cancelled(id, index) {
    const peer = this.peers.get(id);
    if (peer) peer.cancelled[index] = 1;
    this._finish(index);
  }

  // Whether `peer` may be asked for piece `index`: it announced it, has not failed too often, and was not
  // cancelled on it.
  _askable(peer, index) {
    return peer.has[index] && peer.strikes < MAX_STRIKES && !peer.cancelled[index];
  }

  _finish(index) {
    const flight = this.inflight.get(index);
    if (!flight) return;
    this.inflight.delete(index);
    if (flight.source === "http") this.httpActive--;
    else {
      const peer = this.peers.get(flight.peer);
      if (peer) {
        peer.load--;
        peer.owed = Math.max(0, peer.owed - (this.sizes[index] - flight.got));
      }
    }
  }

  _anyPeerHas(index) {
    for (const peer of this.peers.values()) if (this._askable(peer, index)) return true;
    return false;
  }

  // The ready peer holding the piece that would bring it soonest: {id, eta}, or null.
  _bestPeer(index, now, except) {
    let best = null;
    for (const [id, peer] of this.peers) {
      if (id === except || !peer.ready || !this._askable(peer, index) || peer.load >= MAX_OUTSTANDING) continue;
      const eta = this._peerEta(peer, index, now);
      if (eta < Infinity && (best === null || eta < best.eta)) best = { id, eta };
    }
    return best;
  }
}
