// The browser's piece picker, without a browser: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

import { MAX_OUTSTANDING, PEER_PATIENCE, Picker, REQUEST_TIMEOUT } from "../../node/gateway/static/player/picker.js";

const idle = { playIndex: 0, urgentBefore: 0, stalledOn: new Set() };
const kinds = (actions) => actions.map((a) => `${a.kind}:${a.peer ?? "-"}:${a.index}`);

test("pieces go to ready peers that have them, in play order, at most MAX_OUTSTANDING each", () => {
  const picker = new Picker(10);
  picker.addPeer("a");
  picker.peerHas("a", [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(picker.plan(0, idle), []); // not ready: nothing asked yet
  picker.peerReady("a");
  const actions = picker.plan(0, { ...idle, playIndex: 2 });
  assert.deepEqual(kinds(actions), ["request:a:2", "request:a:3", "request:a:4", "request:a:5"]);
  assert.equal(actions.length, MAX_OUTSTANDING);
});

test("urgent pieces nobody has go to HTTP at once; pieces not yet needed wait for peers", () => {
  const picker = new Picker(10);
  const actions = picker.plan(0, { playIndex: 0, urgentBefore: 2, stalledOn: new Set() });
  assert.deepEqual(kinds(actions), ["http:-:0", "http:-:1"]);
  picker.received(0);
  assert.deepEqual(picker.plan(1, { playIndex: 0, urgentBefore: 2, stalledOn: new Set() }), []); // 1 in flight
});

test("an urgent piece a peer has waits PEER_PATIENCE for it, then goes to HTTP and the peer is cancelled", () => {
  const picker = new Picker(4);
  picker.addPeer("a");
  picker.peerReady("a");
  picker.peerHas("a", [0, 1, 2, 3]);
  const view = { playIndex: 0, urgentBefore: 1, stalledOn: new Set() };
  assert.deepEqual(kinds(picker.plan(0, view)), ["request:a:0", "request:a:1", "request:a:2", "request:a:3"]);
  assert.deepEqual(picker.plan(PEER_PATIENCE - 1, view), []);
  assert.deepEqual(kinds(picker.plan(PEER_PATIENCE + 1, view)), ["cancel:a:0", "http:-:0"]);
});

test("a stalled element does not wait for peers", () => {
  const picker = new Picker(4);
  picker.addPeer("a");
  picker.peerReady("a");
  picker.peerHas("a", [3]);
  const actions = picker.plan(0, { playIndex: 3, urgentBefore: 0, stalledOn: new Set([3]) });
  assert.deepEqual(kinds(actions), ["http:-:3"]);
});

test("a request with no progress for REQUEST_TIMEOUT is cancelled, struck, and asked again", () => {
  const picker = new Picker(1);
  for (const id of ["a", "b"]) {
    picker.addPeer(id);
    picker.peerReady(id);
    picker.peerHas(id, [0]);
  }
  assert.deepEqual(kinds(picker.plan(0, idle)), ["request:a:0"]);
  assert.ok(picker.progress("a", 0, 1000));
  assert.equal(picker.progress("b", 0, 1000), false); // b was not asked
  assert.deepEqual(picker.plan(1000 + REQUEST_TIMEOUT - 1, idle), []);
  const actions = picker.plan(1000 + REQUEST_TIMEOUT + 1, idle);
  assert.equal(actions[0].kind, "cancel");
  assert.equal(picker.peers.get("a").strikes, 1);
  assert.deepEqual(kinds(actions.slice(1)), ["request:b:0"]); // not the peer that just timed out
});

test("a peer that leaves frees its pieces for others", () => {
  const picker = new Picker(2);
  picker.addPeer("a");
  picker.peerReady("a");
  picker.peerHas("a", [0, 1]);
  picker.plan(0, idle);
  picker.removePeer("a");
  assert.equal(picker.inflight.size, 0);
  const urgent = picker.plan(1, { playIndex: 0, urgentBefore: 2, stalledOn: new Set() });
  assert.deepEqual(kinds(urgent), ["http:-:0", "http:-:1"]);
});

test("while waiting to hear who else watches, only what the element waits on goes to HTTP", () => {
  const picker = new Picker(4);
  const view = { playIndex: 0, urgentBefore: 3, stalledOn: new Set([0]), holdHttpUntil: 100 };
  assert.deepEqual(kinds(picker.plan(0, view)), ["http:-:0"]);
  assert.deepEqual(kinds(picker.plan(101, view)), ["http:-:1", "http:-:2"]);
});
