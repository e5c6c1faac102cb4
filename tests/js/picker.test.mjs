// The browser's fetch policy, without a browser: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  AHEAD_OF_SWARM,
  HTTP_PARALLEL,
  HTTP_TOOK,
  MARGIN,
  MAX_OUTSTANDING,
  MAX_STRIKES,
  PEER_RATE,
  Picker,
  REQUEST_TIMEOUT,
  STALLED_PEER,
} from "../../node/gateway/static/player/picker.js";

const SIZE = 262144;
const LEAD = HTTP_TOOK + MARGIN; // how long before its deadline a piece goes to HTTP, before any measurement
const kinds = (actions) => actions.map((a) => `${a.kind}:${a.peer ?? "-"}:${a.index}`);
const never = { playIndex: 0, deadline: () => Infinity };
// Deadlines as playback at `perPiece` ms a piece would set them, playback at piece `play` at time `t0`.
const playing = (t0, play, perPiece) => ({
  playIndex: play,
  deadline: (i) => (i < play ? Infinity : t0 + (i - play) * perPiece),
});

function withPeers(count, ids, has) {
  const picker = new Picker(count);
  for (const id of ids) {
    picker.addPeer(id);
    picker.peerReady(id);
    picker.peerHas(id, has);
  }
  return picker;
}

// A peer sends `bytes` of piece `index` in 16 KiB chunks between `from` and `to`.
function deliver(picker, id, index, from, to, bytes = SIZE) {
  const chunks = Math.ceil(bytes / 16320);
  for (let k = 1; k <= chunks; k++) {
    const size = Math.min(16320, bytes - (k - 1) * 16320);
    assert.ok(picker.progress(id, index, from + ((to - from) * k) / chunks, size));
  }
}

test("pieces nothing waits for go to ready peers that have them, in play order, at most MAX_OUTSTANDING each", () => {
  const picker = new Picker(10);
  picker.addPeer("a");
  picker.peerHas("a", [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(picker.plan(0, never), []); // not ready: nothing asked, and nothing to HTTP either
  picker.peerReady("a");
  const actions = picker.plan(0, { ...never, playIndex: 2 });
  assert.deepEqual(kinds(actions), ["request:a:2", "request:a:3", "request:a:4", "request:a:5"]);
  assert.equal(actions.length, MAX_OUTSTANDING);
});

test("what the element waits on goes to HTTP at once, even when a peer has it (the first frame never waits)", () => {
  const picker = withPeers(4, ["a"], [0, 1, 2, 3]);
  const view = { playIndex: 0, deadline: (i) => (i === 0 ? 0 : Infinity) };
  const actions = picker.plan(0, view);
  assert.deepEqual(kinds(actions)[0], "http:-:0");
  assert.equal(actions[0].reason, "due now");
  assert.deepEqual(kinds(actions.slice(1)), ["request:a:1", "request:a:2", "request:a:3"]);
});

test("a piece no peer has waits until its deadline is within HTTP's lead and AHEAD_OF_SWARM, then goes to HTTP", () => {
  const picker = new Picker(3);
  const view = { playIndex: 0, deadline: () => 10000 };
  assert.deepEqual(picker.plan(10000 - LEAD - AHEAD_OF_SWARM - 1, view), []);
  const actions = picker.plan(10000 - LEAD - AHEAD_OF_SWARM, view);
  // One fetch stays free for what the element may wait on.
  assert.deepEqual(kinds(actions), ["http:-:0", "http:-:1", "http:-:2"].slice(0, HTTP_PARALLEL - 1));
  assert.equal(actions[0].reason, "no peer has it");
  const stalled = { playIndex: 0, deadline: (i) => (i === 2 ? 10000 - LEAD - AHEAD_OF_SWARM : 10000) };
  assert.deepEqual(kinds(picker.plan(10000 - LEAD - AHEAD_OF_SWARM, stalled)), ["http:-:2"]);
  assert.equal(picker.httpActive, HTTP_PARALLEL);
});

test("a peer that can deliver in time is asked, and HTTP is not used while the request keeps pace", () => {
  const picker = withPeers(2, ["a"], [0, 1]);
  const view = playing(2000, 0, 1000); // piece 0 needed at 2 s, piece 1 at 3 s
  assert.deepEqual(kinds(picker.plan(0, view)), ["request:a:0", "request:a:1"]);
  deliver(picker, "a", 0, 0, 100);
  picker.received(0, 100);
  deliver(picker, "a", 1, 100, 200);
  picker.received(1, 200);
  for (let t = 200; t <= 2000; t += 100) assert.deepEqual(picker.plan(t, view), []);
});

test("requests go to the peer that would deliver soonest, by measured rate", () => {
  const picker = withPeers(8, ["slow", "fast"], [0, 1, 2, 3, 4, 5, 6, 7]);
  // Measure both: fast sends a piece in 20 ms, slow in 1000 ms.
  picker.plan(0, { playIndex: 0, deadline: (i) => (i < 2 ? 60000 : Infinity), wantBefore: 2 });
  const [first, second] = [...picker.inflight.entries()].map(([index, f]) => [index, f.peer]);
  const fastIndex = first[1] === "fast" ? first[0] : second[0];
  const slowIndex = first[1] === "slow" ? first[0] : second[0];
  deliver(picker, "fast", fastIndex, 0, 20);
  picker.received(fastIndex);
  deliver(picker, "slow", slowIndex, 0, 1000);
  picker.received(slowIndex);
  assert.ok(picker.peers.get("fast").rate > picker.peers.get("slow").rate * 5);
  // The next piece, needed soon, goes to the fast peer.
  const actions = picker.plan(1000, { playIndex: 2, deadline: (i) => (i === 2 ? 1000 + LEAD + 100 : Infinity), wantBefore: 3 });
  assert.deepEqual(kinds(actions), ["request:fast:2"]);
});

test("a peer that falls behind a piece's deadline is replaced by another peer before the deadline", () => {
  const picker = withPeers(1, ["a", "b"], [0]);
  const deadline = 5000;
  const view = { playIndex: 0, deadline: () => deadline };
  const [asked] = picker.plan(0, view);
  assert.equal(asked.kind, "request");
  const other = asked.peer === "a" ? "b" : "a";
  // The asked peer sends nothing: once it counts as stalled, the piece is re-issued to the other peer.
  let t = 0;
  let actions = [];
  while (actions.length === 0) {
    t += 50;
    actions = picker.plan(t, view);
  }
  assert.ok(t <= STALLED_PEER + 50 && t < deadline - MARGIN, `re-issued at ${t}`);
  assert.deepEqual(kinds(actions), [`cancel:${asked.peer}:0`, `request:${other}:0`]);
  assert.equal(actions[0].reason, "re-issued");
});

test("a piece cancelled on a peer is never asked of it again: its old chunks could not be told from new ones", () => {
  // Tried: piece 0 asked of one peer, re-issued to the other when the first stalls, and the second stalls too.
  // Asking the first again would have its cancelled send's last chunks arrive first (peers.js dropped such a
  // peer for chunks out of order); the piece goes to HTTP at its lead instead, and the first still gets others.
  const picker = withPeers(2, ["a", "b"], [0]);
  const deadline = 5000;
  const view = { playIndex: 0, deadline: (i) => (i === 0 ? deadline : Infinity) };
  const first = picker.plan(0, view).find((a) => a.index === 0);
  const other = first.peer === "a" ? "b" : "a";
  let t = 0;
  const seen = [];
  while (t < deadline) {
    t += 50;
    for (const action of picker.plan(t, view)) if (action.index === 0) seen.push({ ...action, t });
  }
  const requests = seen.filter((a) => a.kind === "request").map((a) => a.peer);
  assert.deepEqual(requests, [other], `asked again: ${JSON.stringify(seen)}`);
  const http = seen.find((a) => a.kind === "http");
  assert.ok(http && http.t < deadline, `HTTP took it: ${JSON.stringify(seen)}`);
  picker.peerHas(first.peer, [1]); // other pieces are still asked of it
  assert.deepEqual(kinds(picker.plan(t + 50, view)), [`request:${first.peer}:1`]);
});

test("a slow peer with no one else to take over: HTTP takes the piece at its lead, never after its deadline", () => {
  const picker = withPeers(1, ["a"], [0]);
  const deadline = 4000;
  const view = { playIndex: 0, deadline: () => deadline };
  assert.deepEqual(kinds(picker.plan(0, view)), ["request:a:0"]);
  let t = 0;
  let actions = [];
  // The peer trickles: a chunk every 300 ms (so it is not stalled), far too slow for the deadline.
  while (actions.length === 0 && t < deadline) {
    t += 100;
    if (t % 300 === 0) picker.progress("a", 0, t, 1000);
    actions = picker.plan(t, view);
  }
  assert.deepEqual(kinds(actions), ["cancel:a:0", "http:-:0"]);
  assert.equal(actions[1].reason, "peer too slow");
  assert.ok(t >= deadline - LEAD && t <= deadline - MARGIN, `went to HTTP at ${t}`);
});

test("a piece only busy peers have goes to HTTP at its lead, saying so", () => {
  const picker = withPeers(MAX_OUTSTANDING + 1, ["a"], [0, 1, 2, 3, 4]);
  // Fill a's slots with pieces nothing waits for yet, then piece 4 becomes needed soon.
  const later = { playIndex: 0, deadline: (i) => (i < MAX_OUTSTANDING ? 60000 : 1000 + LEAD) };
  assert.equal(picker.plan(0, later).length, MAX_OUTSTANDING);
  deliver(picker, "a", 0, 0, 100, 1000); // a keeps sending (not stalled), its slots stay full
  const actions = picker.plan(1000, later);
  assert.deepEqual(kinds(actions), ["http:-:4"]);
  assert.equal(actions[0].reason, "peers busy");
});

test("a request with no progress for REQUEST_TIMEOUT is cancelled, struck, and asked elsewhere", () => {
  const picker = withPeers(1, ["a", "b"], [0]);
  const [asked] = picker.plan(0, never);
  const other = asked.peer === "a" ? "b" : "a";
  assert.ok(picker.progress(asked.peer, 0, 1000, 100));
  assert.equal(picker.progress(other, 0, 1000, 100), false); // not asked
  assert.deepEqual(picker.plan(1000 + REQUEST_TIMEOUT - 1, never), []);
  const actions = picker.plan(1000 + REQUEST_TIMEOUT + 1, never);
  assert.equal(actions[0].kind, "cancel");
  assert.equal(picker.peers.get(asked.peer).strikes, 1);
  assert.deepEqual(kinds(actions.slice(1)), [`request:${other}:0`]);
});

test("a request queued behind others times out only when its peer stops moving, or after MAX_OUTSTANDING timeouts", () => {
  // What was tried: a peer sending piece 0 a chunk a second (slow, busy) while piece 1 waits behind it in its queue.
  // Piece 1 shows no progress of its own, but the peer is not stuck: before, it was cancelled and struck at 4 s.
  const picker = withPeers(2, ["a"], [0, 1]);
  assert.deepEqual(kinds(picker.plan(0, never)), ["request:a:0", "request:a:1"]);
  for (let t = 1000; t <= 6000; t += 1000) assert.ok(picker.progress("a", 0, t, 16320));
  assert.deepEqual(picker.plan(6000, never), []);
  assert.equal(picker.peers.get("a").strikes, 0);
  // The peer goes quiet: both requests time out REQUEST_TIMEOUT after its last chunk.
  assert.deepEqual(picker.plan(6000 + REQUEST_TIMEOUT, never), []);
  const actions = picker.plan(6000 + REQUEST_TIMEOUT + 1, never);
  assert.deepEqual(kinds(actions), ["cancel:a:0", "cancel:a:1"]);
  assert.equal(picker.peers.get("a").strikes, 2);
});

test("chunks of a cancelled send count as the peer moving: the requests behind them are not timed out", () => {
  // What was tried: a peer still sending chunks of a piece we cancelled on it (a channel's worth was buffered
  // before the cancel reached it) for 4.5 s while our next two requests wait behind them.
  const picker = withPeers(2, ["a"], [0, 1]);
  assert.deepEqual(kinds(picker.plan(0, never)), ["request:a:0", "request:a:1"]);
  for (let t = 500; t <= 4500; t += 500) picker.stale("a", t);
  assert.deepEqual(picker.plan(4500, never), []);
  assert.deepEqual(kinds(picker.plan(4500 + REQUEST_TIMEOUT + 1, never)), ["cancel:a:0", "cancel:a:1"]);
});

test("a request open MAX_OUTSTANDING timeouts is given up however its peer trickles", () => {
  // What was tried: a peer that keeps sending 1000 bytes a second of piece 0 and never starts piece 1.
  const picker = withPeers(2, ["a"], [0, 1]);
  picker.plan(0, never);
  const ceiling = MAX_OUTSTANDING * REQUEST_TIMEOUT;
  for (let t = 1000; t <= ceiling; t += 1000) assert.ok(picker.progress("a", 0, t, 1000));
  assert.deepEqual(picker.plan(ceiling, never), []);
  assert.ok(picker.progress("a", 0, ceiling + 1, 1000));
  assert.deepEqual(kinds(picker.plan(ceiling + 1, never)), ["cancel:a:0", "cancel:a:1"]);
});

test("a peer with MAX_STRIKES is asked nothing more", () => {
  const picker = withPeers(1, ["a"], [0]);
  picker.peers.get("a").strikes = MAX_STRIKES;
  assert.deepEqual(picker.plan(0, never), []);
});

test("a reject frees the request and the piece is not asked of that peer again", () => {
  const picker = withPeers(1, ["a"], [0]);
  assert.deepEqual(kinds(picker.plan(0, never)), ["request:a:0"]);
  picker.peerLacks("a", 0);
  assert.equal(picker.inflight.size, 0);
  assert.deepEqual(picker.plan(1, never), []);
});

test("a peer that leaves frees its pieces for others", () => {
  const picker = withPeers(2, ["a"], [0, 1]);
  picker.plan(0, never);
  picker.removePeer("a");
  assert.equal(picker.inflight.size, 0);
  assert.deepEqual(kinds(picker.plan(1, { playIndex: 0, deadline: () => 1 })), ["http:-:0", "http:-:1"]); // due now
});

test("before the hub has said who else watches, only what is due now goes to HTTP", () => {
  const picker = new Picker(3);
  const view = { playIndex: 0, deadline: (i) => (i === 0 ? 0 : 500), httpAllowed: false };
  assert.deepEqual(kinds(picker.plan(0, view)), ["http:-:0"]);
  picker.received(0, 10);
  assert.deepEqual(kinds(picker.plan(10, { ...view, httpAllowed: true })), ["http:-:1", "http:-:2"]);
});

test("before the hub has said who watches, no piece counts as nobody's: HTTP waits for the plain lead", () => {
  const picker = new Picker(1);
  const view = { playIndex: 0, deadline: () => 10000, peersKnown: false };
  assert.deepEqual(picker.plan(10000 - LEAD - AHEAD_OF_SWARM, view), []);
  assert.deepEqual(kinds(picker.plan(10000 - LEAD, view)), ["http:-:0"]);
});

test("fetchBefore: pieces due later are not asked for yet, from peers or HTTP", () => {
  const picker = withPeers(3, ["a"], [0, 1, 2]);
  const view = { playIndex: 0, deadline: (i) => i * 1500, fetchBefore: 2000 };
  assert.deepEqual(kinds(picker.plan(0, view)), ["http:-:0", "request:a:1"]);
  assert.deepEqual(picker.plan(10, { ...view, deadline: () => Infinity }), []);
});

test("prefetch: only pieces before wantBefore are fetched, from peers, and HTTP only once the swipe is near", () => {
  const picker = withPeers(6, ["a"], [0, 1]);
  const swipeAt = 8000;
  const view = { playIndex: 0, wantBefore: 3, deadline: (i) => swipeAt + i * 500 };
  assert.deepEqual(kinds(picker.plan(0, view)), ["request:a:0", "request:a:1"]); // 2 is nobody's: it waits
  deliver(picker, "a", 0, 0, 100);
  picker.received(0);
  deliver(picker, "a", 1, 100, 200);
  picker.received(1);
  assert.deepEqual(picker.plan(swipeAt + 1000 - LEAD - AHEAD_OF_SWARM - 1, view), []);
  const actions = picker.plan(swipeAt + 1000 - LEAD - AHEAD_OF_SWARM, view);
  assert.deepEqual(kinds(actions), ["http:-:2"]);
  assert.equal(actions[0].reason, "no peer has it");
  assert.ok(![...picker.inflight.keys()].some((i) => i >= 3));
});

test("an unmeasured peer is assumed at PEER_RATE; HTTP's lead follows the gateway's measured time", () => {
  const picker = withPeers(2, ["a"], [0, 1]);
  assert.equal(picker.peers.get("a").rate, PEER_RATE);
  assert.equal(picker.httpLead(), HTTP_TOOK + MARGIN);
  picker.plan(0, { playIndex: 0, deadline: () => 0 }); // both due now: HTTP
  picker.received(0, 1000);
  assert.ok(picker.httpLead() > HTTP_TOOK + MARGIN);
});

