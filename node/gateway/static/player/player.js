// One clip being watched (or prefetched): its verified pieces, where they
// come from (peers first, HTTP when playback needs them), and the answers to
// the Service Worker that feeds the <video> element's Range requests.

import { blockMatches } from "./codec.js";
import { ClipError, fetchBlock, loadClip, pieceAt, pieceData } from "./clip.js";
import { ViewerSwarm } from "./peers.js";
import { Picker } from "./picker.js";

const PLAN_EVERY = 100; // ms
const CACHE_BYTES = 256 * 1024 * 1024; // verified pieces kept for playback and seeding, per clip
const HAVE_FUTURE_DATA = 3;
const SHARE_AFTER = 1500; // ms, for clips with no first frame to wait for (prefetching)
const HOLD_HTTP_FOR_WELCOME = 400; // ms the first look-ahead waits to hear which peers have what
const TRACE_ENTRIES = 4000;
const BUFFER_LOW = 0.5; // s buffered ahead of the play position below which a waiting element is starved
const FIRST_FRAME_WAIT = 2000; // ms without a first frame after which the element may buffer BUFFER_FIRST s over HTTP
const BUFFER_FIRST = 3.0; // s
const FIRST_FRAME_AHEAD = 1500; // ms
// ms a waiting element waits on a piece it asked for before HTTP takes it, whatever its deadline says: an
// element that has shown its first frame but not started (autoplay waits for more data) is paused, and
// the deadlines of a paused element never come (seen: a viewer stuck at 0:00 with 45 of 76 pieces).
const DEMAND_PATIENCE = 1000;
const HTTP_ONLY_AHEAD = 3000; // ms further ahead HTTP fetches when there are no peers to wait for (P2P off)

export class Clip {
  // lookahead (ms, optional): fetch no piece due later than that ahead of now, and none that nothing waits
  // for; peers (optional): offer connections to at most that many. The feed sets both: a page in three
  // swarms at once, each taking every piece it could at once, took more CPU than the machine had.
  constructor({ gateway, cid, p2p, lookahead = null, peers = null }) {
    this.lookahead = lookahead;
    this.maxOffers = peers;
    this.gateway = gateway;
    this.cid = cid;
    this.p2p = p2p;
    this.video = null;
    this.blocks = new Map(); // index -> verified block bytes
    this.cachedBytes = 0;
    this.evicted = new Set();
    this.waiters = new Map(); // index -> [resolve]
    this.demanded = new Set();
    this.demandedSince = new Map(); // index -> when the element first asked for it (Date.now())
    this.stalled = true;
    // Times are performance.now() (ms since the page started): what the page shows and benchmarks read.
    this.stats = { bytesFromPeers: 0, bytesFromHttp: 0, badPieces: 0, firstFrameAt: null, firstPeerByteAt: null,
                   lastPeerByteAt: null, stalls: 0 }; // prettier-ignore
    this.swarm = null;
    this.httpReported = 0; // HTTP bytes earlier swarm memberships reported: a new one reports the rest
    this.sentBefore = 0; // bytes of whole pieces earlier swarm memberships sent to other viewers
    this.closed = false;
    this.holdHttpUntil = 0;
    this.prefetchPlan = null; // {at, seconds, duration} while the feed prefetches this clip
    this.held = false; // see hold()
    this.abort = new AbortController();
    this.firstFrame = new Promise((resolve) => (this._framed = resolve)); // resolves when attached and shown
    this.trace = []; // HTTP pieces and why: {t, i, reason}
  }

  async open() {
    const [clip, type] = await Promise.all([
      loadClip(this.gateway, this.cid, this.abort.signal),
      fetch(`${this.gateway}/ipfs/${this.cid}`, { method: "HEAD", signal: this.abort.signal }).then(
        (r) => r.headers.get("Content-Type") || "application/octet-stream",
      ),
    ]);
    this.size = clip.size;
    this.type = type;
    this.pieces = clip.pieces;
    this.picker = new Picker(this.pieces.length, this.pieces.map((p) => p.blockSize));
    for (const [index, block] of clip.fetched) {
      this._trace(index, "DAG node");
      this._keep(index, block, "http");
    }
    // The swarm waits for the first frame (see attach), or this long where there is none: joining and
    // connecting while the first frame loads made it measurably later (even the hub's WebSocket alone).
    if (this.p2p) this.connectTimer = setTimeout(() => this._share(), SHARE_AFTER);
    this.planner = setInterval(() => this._plan(), PLAN_EVERY);
    return this;
  }

  attach(video) {
    this.video = video;
    this.attachedAt = Date.now();
    this.prefetchPlan = null;
    const firstFrame = () => {
      this.stats.firstFrameAt ??= performance.now();
      this._framed();
      this._share();
    };
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(firstFrame);
    else video.addEventListener("playing", firstFrame, { once: true });
    const stalled = () => {
      this.stalled = true;
      this._plan();
    };
    video.addEventListener("waiting", () => {
      if (this.stats.firstFrameAt !== null) this.stats.stalls++;
      stalled();
    });
    video.addEventListener("seeking", stalled);
    video.addEventListener("playing", () => {
      this.stalled = false;
      this.played = true; // from now on, paused means someone paused it (or the feed moved on)
    });
    video.addEventListener("canplay", () => (this.stalled = video.readyState < HAVE_FUTURE_DATA));
  }

  close() {
    this.closed = true;
    clearInterval(this.planner);
    clearTimeout(this.connectTimer);
    this.abort.abort();
    if (this.swarm) this.swarm.close();
    this.blocks.clear();
  }

  setP2P(on) {
    if (on === this.p2p || this.closed) return;
    this.p2p = on;
    if (!on) this.leave();
    else if (this.picker) this._share();
  }

  // Leave the clip's swarm (keeping what is verified here): the feed's clips behind the one on screen.
  leave() {
    clearTimeout(this.connectTimer);
    if (!this.swarm) return;
    this.swarm.close();
    this.httpReported += this.swarm.reportedHttp;
    this.sentBefore += sumOf(this.swarm.sent);
    this.swarm = null;
  }

  _join() {
    if (this.swarm) return;
    this._startSwarm();
    this.holdHttpUntil = Date.now() + HOLD_HTTP_FOR_WELCOME;
  }

  // Join the clip's swarm and connect to the peers the hub introduces.
  _share() {
    if (!this.p2p || this.closed || !this.picker) return;
    this._join();
    if (!this.swarm.connecting) this.swarm.connect();
  }

  // Connect to the clip's peers now (a prefetched clip, once the clip on screen shows its first frame).
  share() {
    clearTimeout(this.connectTimer);
    this._share();
  }

  // A clip not on screen: fetch its first `seconds` (of `duration`) by `at` (a Date.now() time: when the
  // viewer is expected to swipe to it), from peers, and over HTTP only once that time is near.
  prefetch(at, seconds, duration) {
    this.prefetchPlan = { at, seconds, duration };
    this.held = false;
    this._plan();
  }

  // Fetch nothing more for now (seed what is here): the feed holds every clip but the one on screen
  // until that one shows its first frame, and keeps the clips behind held.
  hold() {
    this.held = true;
  }

  resume() {
    this.held = false;
    this._plan();
  }

  // How many pieces from the start this clip is fetching: the prefetch's first seconds, or all of them.
  wantedPieces() {
    if (!this.pieces) return 0;
    return this._view(Date.now()).wantBefore ?? this.pieces.length;
  }

  _startSwarm() {
    this.swarm = new ViewerSwarm(this.gateway, this.cid, this.pieces.length, {
      maxOffers: this.maxOffers ?? undefined,
      picker: this.picker,
      pieceSize: (i) => this.pieces[i].blockSize,
      getPiece: (i) => this.blocks.get(i) || null,
      acceptPiece: (i, bytes) => this._fromPeer(i, bytes),
      changed: () => this._plan(),
      welcomed: () => {
        this.holdHttpUntil = 0;
        this._plan();
      },
    });
    this.swarm.addHttp(this.stats.bytesFromHttp - this.httpReported);
    this.swarm.start();
  }

  peers() {
    return this.swarm ? this.swarm.openPeers() : 0;
  }

  // Bytes of verified pieces this page has sent to other viewers of the clip (what the hub is told as "sent").
  bytesToPeers() {
    return this.sentBefore + (this.swarm ? sumOf(this.swarm.sent) : 0);
  }

  verifiedPieces() {
    return this.blocks.size + this.evicted.size;
  }

  // The file bytes from `offset` to the end of its piece, once verified.
  async read(offset) {
    if (offset >= this.size) return new Uint8Array(0);
    const piece = pieceAt(this.pieces, offset);
    let block = this.blocks.get(piece.index);
    if (!block) {
      if (this.evicted.delete(piece.index)) this.picker.have[piece.index] = 0;
      this.demanded.add(piece.index);
      if (!this.demandedSince.has(piece.index)) this.demandedSince.set(piece.index, Date.now());
      const arrived = new Promise((resolve) => {
        const list = this.waiters.get(piece.index) || [];
        list.push(resolve);
        this.waiters.set(piece.index, list);
      });
      this._plan();
      block = await arrived;
      this.demanded.delete(piece.index);
      this.demandedSince.delete(piece.index);
    }
    const data = pieceData(piece, block);
    const bytes = data.subarray(offset - piece.offset);
    return bytes;
  }

  // ------------------------------------------------------------ fetching

  // Seconds of playback per byte, from the element or from what the feed said of a clip not on screen.
  _secondsPerByte() {
    const video = this.video;
    if (video && Number.isFinite(video.duration) && video.duration > 0) return video.duration / this.size;
    const plan = this.prefetchPlan;
    if (plan && plan.duration > 0) return plan.duration / this.size;
    return null;
  }

  // What the picker needs by when: see picker.js. With P2P off nothing is worth waiting for: HTTP fetches
  // HTTP_ONLY_AHEAD further ahead, which keeps more buffered.
  _view(now) {
    if (this.held) return { playIndex: 0, wantBefore: 0, deadline: () => Infinity };
    const view = this._deadlines(now);
    // Until the element shows its first frame it is given only what it needs within FIRST_FRAME_AHEAD:
    // a clip that comes on screen with peers connected (the feed's) would otherwise take pieces from them
    // in bulk, and receiving them made the first frame measurably later.
    const beforeFirstFrame = this.video && this.stats.firstFrameAt === null;
    if (beforeFirstFrame) view.fetchBefore = now + FIRST_FRAME_AHEAD;
    else if (this.lookahead !== null) view.fetchBefore = now + this.lookahead;
    if (!this.p2p) return { ...view, extraLead: HTTP_ONLY_AHEAD };
    const peersKnown = this.swarm !== null && this.swarm.myId !== null;
    // Before its first frame with no peer open, what the element reads ahead is HTTP's either way: it is
    // fetched as far ahead as with P2P off. With HTTP's shorter lead the element waited on the pieces between,
    // and P2P on was 1.19x (1.35x with a viewer seeding) later to its first frame than P2P off.
    if (beforeFirstFrame && this.peers() === 0) return { ...view, peersKnown, extraLead: HTTP_ONLY_AHEAD };
    return { ...view, peersKnown };
  }

  _deadlines(now) {
    const video = this.video;
    const perByte = this._secondsPerByte();
    let lowestDemanded = Infinity;
    for (const i of this.demanded) lowestDemanded = Math.min(lowestDemanded, i);
    const waiting = video && (this.stalled || video.readyState < HAVE_FUTURE_DATA);
    const httpAllowed = !this.swarm || this.swarm.myId !== null || now >= this.holdHttpUntil;
    if (!video) {
      const plan = this.prefetchPlan;
      if (!plan || perByte === null) return { playIndex: 0, wantBefore: 0, deadline: () => Infinity, httpAllowed };
      const wantBefore = pieceAt(this.pieces, Math.min(this.size - 1, plan.seconds / perByte)).index + 1;
      return { playIndex: 0, wantBefore, httpAllowed, deadline: (i) => plan.at + this.pieces[i].offset * perByte * 1000 };
    }
    const playing = perByte !== null && !(video.paused && this.played);
    const position = video.currentTime;
    const rate = video.playbackRate > 0 ? video.playbackRate : 1;
    let playIndex = 0;
    if (perByte !== null) playIndex = pieceAt(this.pieces, Math.min(this.size - 1, position / perByte)).index;
    else if (lowestDemanded !== Infinity) playIndex = lowestDemanded;
    // The element waits on what it reads when it does not know the clip's length yet (the first frame),
    // or when it is stalled with less than BUFFER_LOW buffered: not when it is only reading ahead, or
    // slow to show a frame it has the bytes for (a busy machine).
    // A first frame that has not come FIRST_FRAME_WAIT after the element was given its source gets up to
    // BUFFER_FIRST buffered over HTTP, so it never waits on peers however much the element wants.
    const buffered = waiting ? bufferedAhead(video) : Infinity;
    const slowStart = this.stats.firstFrameAt === null && now - this.attachedAt > FIRST_FRAME_WAIT;
    const starved = perByte === null || buffered < BUFFER_LOW || (slowStart && buffered < BUFFER_FIRST);
    const deadline = (i) => {
      // Until playback has started, what the element reads is what it waits on: Chromium starts an
      // autoplay only once it has enough buffered, and slow peers kept one at 0:00 with 41 of 76 pieces.
      const waitedOn = starved || !this.played || (waiting && now - this.demandedSince.get(i) > DEMAND_PATIENCE);
      if (this.demanded.has(i) && waitedOn) {
        return now;
      }
      if (!playing) return Infinity;
      const piece = this.pieces[i];
      const starts = piece.offset * perByte;
      if ((piece.offset + piece.size) * perByte < position) return Infinity; // behind: for seeding only
      return now + (Math.max(0, starts - position) * 1000) / rate;
    };
    return { playIndex, deadline, httpAllowed };
  }

  _plan() {
    if (this.closed || !this.picker) return;
    const now = Date.now();
    for (const action of this.picker.plan(now, this._view(now))) {
      if (action.kind === "request") {
        if (!this.swarm || !this.swarm.request(action.peer, action.index)) this.picker.failed(action.index);
      } else if (action.kind === "cancel") {
        if (this.swarm) this.swarm.cancel(action.peer, action.index);
      } else if (action.kind === "http") {
        this._trace(action.index, action.reason);
        this._fromHttp(action.index);
      }
    }
  }

  // Why a piece went to HTTP, with where playback stood (for benchmarks and the curious: clip.trace).
  _trace(index, reason) {
    if (this.trace.length >= TRACE_ENTRIES) return;
    const v = this.video;
    const perByte = this._secondsPerByte();
    const ahead = v && perByte !== null ? this.pieces[index].offset * perByte - v.currentTime : null;
    this.trace.push({ t: Math.round(performance.now()), i: index, reason, ahead, rs: v ? v.readyState : -1,
                      peers: this.peers(), ff: this.stats.firstFrameAt !== null }); // prettier-ignore
  }

  async _fromHttp(index) {
    const piece = this.pieces[index];
    try {
      const block = await fetchBlock(this.gateway, piece.cid, this.abort.signal);
      if (this.blocks.has(index)) {
        this.picker.failed(index);
        return;
      }
      this._keep(index, block, "http");
    } catch (err) {
      this.picker.failed(index);
      if (!this.closed && !(err instanceof ClipError)) setTimeout(() => this._plan(), 500);
      else if (!this.closed) console.warn("medianode:", err.message);
    }
  }

  // "bad", "kept", or "duplicate" (verified, but already here): what the swarm counts as got from the peer.
  async _fromPeer(index, block) {
    const piece = this.pieces[index];
    if (!(await blockMatches(piece.cid, block))) {
      this.stats.badPieces++;
      this.picker.failed(index);
      this._plan();
      return "bad";
    }
    if (this.blocks.has(index)) {
      this.picker.failed(index);
      return "duplicate";
    }
    this._keep(index, block, "peer");
    return "kept";
  }

  _keep(index, block, source) {
    this.blocks.set(index, block);
    this.cachedBytes += block.length;
    this.picker.received(index, Date.now());
    if (source === "peer") {
      this.stats.bytesFromPeers += block.length;
      this.stats.firstPeerByteAt ??= performance.now();
      this.stats.lastPeerByteAt = performance.now();
    } else this.stats.bytesFromHttp += block.length;
    if (this.swarm) {
      if (source === "http") this.swarm.addHttp(block.length);
      this.swarm.announce(index);
    }
    for (const resolve of this.waiters.get(index) || []) resolve(block);
    this.waiters.delete(index);
    this._evict();
    this._plan();
  }

  // Drop the pieces furthest behind playback once the cache is full; they are
  // fetched again if the viewer seeks back, and rejected if a peer asks.
  _evict() {
    if (this.cachedBytes <= CACHE_BYTES) return;
    const play = this._view(Date.now()).playIndex;
    const behind = [...this.blocks.keys()].filter((i) => i < play).sort((a, b) => a - b);
    while (this.cachedBytes > CACHE_BYTES && behind.length) {
      const index = behind.shift();
      this.cachedBytes -= this.blocks.get(index).length;
      this.blocks.delete(index);
      this.evicted.add(index);
    }
  }
}

// Seconds the element has buffered from its play position on.
function bufferedAhead(video) {
  const t = video.currentTime;
  const ranges = video.buffered;
  for (let k = 0; k < ranges.length; k++) {
    if (ranges.start(k) <= t + 0.05 && t < ranges.end(k)) return ranges.end(k) - t;
  }
  return 0;
}

function sumOf(counts) {
  let total = 0;
  for (const bytes of counts.values()) total += bytes;
  return total;
}

// Answers the Service Worker's questions for the clips this page has open.
export function serveWorker(clips) {
  navigator.serviceWorker.addEventListener("message", async (event) => {
    const port = event.ports[0];
    const { op, cid, offset } = event.data || {};
    const clip = clips.get(cid);
    if (!port) return;
    if (!clip || !clip.pieces) {
      port.postMessage({ missing: true });
      return;
    }
    if (op === "meta") port.postMessage({ size: clip.size, type: clip.type });
    else if (op === "read") {
      try {
        port.postMessage({ bytes: await clip.read(offset) });
      } catch (err) {
        port.postMessage({ error: String(err) });
      }
    }
  });
}

// Resolves true once a Service Worker controls this page (false where there is none: no P2P then).
export async function controlledByWorker() {
  if (!("serviceWorker" in navigator) || !window.isSecureContext) return false;
  try {
    await navigator.serviceWorker.register("/watch/sw.js", { scope: "/watch/" });
    await navigator.serviceWorker.ready;
    if (navigator.serviceWorker.controller) return true;
    return await new Promise((resolve) => {
      navigator.serviceWorker.addEventListener("controllerchange", () => resolve(true), { once: true });
      setTimeout(() => resolve(!!navigator.serviceWorker.controller), 3000);
    });
  } catch (err) {
    console.warn("medianode: no Service Worker:", err);
    return false;
  }
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// Seconds, or an xsd:duration such as "PT8.5S", as 0:08 or 1:02:03; null if it is neither.
export function formatDuration(value) {
  let seconds = typeof value === "number" ? value : NaN;
  const iso = typeof value === "string" && /^PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?$/.exec(value);
  if (iso) seconds = Number(iso[1] || 0) * 3600 + Number(iso[2] || 0) * 60 + Number(iso[3] || 0);
  if (!Number.isFinite(seconds) || seconds <= 0) return null;
  const s = Math.round(seconds);
  const mm = Math.floor(s / 60) % 60, ss = String(s % 60).padStart(2, "0");
  return s >= 3600 ? `${Math.floor(s / 3600)}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}
