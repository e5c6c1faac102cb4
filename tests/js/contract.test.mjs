// The viewer protocol's wire contract against the browser's codec: node --test tests/js/
// The same vectors run against the Python codec in tests/fast/test_viewer_contract.py.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  bitfield,
  decodePeerMessage,
  indicesIn,
  packMessage,
  unpackMessage,
  wire,
} from "../../node/gateway/static/player/codec.js";
import { HTTP_PARALLEL, MAX_OUTSTANDING, REQUEST_TIMEOUT } from "../../node/gateway/static/player/picker.js";

const contract = JSON.parse(readFileSync(new URL("../../node/swarm/viewers/contract.json", import.meta.url)));
const hex = (bytes) => Buffer.from(bytes).toString("hex");
const fromHex = (text) => new Uint8Array(Buffer.from(text, "hex"));
// A vector's message with {bin: hex} as bytes, as the codec decodes msgpack bin.
const meaning = (value) => {
  if (Array.isArray(value)) return value.map(meaning);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "bin") return fromHex(value.bin);
    return Object.fromEntries(keys.map((k) => [k, meaning(value[k])]));
  }
  return value;
};
const channels = ["signaling_from_viewer", "signaling_from_hub", "data_channel"];

test("the player reads its constants from the contract the Python side reads", () => {
  assert.deepEqual(wire, contract.constants);
  assert.equal(MAX_OUTSTANDING, contract.constants.max_outstanding_requests);
  assert.equal(REQUEST_TIMEOUT, contract.constants.request_timeout_ms);
  assert.equal(HTTP_PARALLEL, contract.constants.http_parallel_fetches);
});

test("every vector's message encodes to its frame, byte for byte as msgpack-python writes it", () => {
  for (const channel of channels) {
    for (const vector of contract[channel]) assert.equal(hex(packMessage(meaning(vector.message))), vector.frame);
  }
});

test("every vector's frame decodes to its message", () => {
  for (const channel of channels) {
    for (const vector of contract[channel]) assert.deepEqual(unpackMessage(fromHex(vector.frame)), meaning(vector.message));
  }
});

test("data-channel frames are checked as the Python viewer checks them", () => {
  const count = contract.data_channel_pieces;
  for (const vector of contract.data_channel) {
    const message = decodePeerMessage(fromHex(vector.frame), count);
    if (vector.pieces) assert.deepEqual(message, { t: "have", pieces: vector.pieces });
    else assert.deepEqual(message, meaning(vector.message));
  }
  for (const vector of contract.data_channel_refused) {
    assert.throws(() => decodePeerMessage(fromHex(vector.frame), count), Error, vector.refused);
  }
  const oversized = new Uint8Array(contract.constants.max_data_message_bytes + 1);
  assert.throws(() => decodePeerMessage(oversized, count), /at most/);
});

test("bitfields: piece i is bit 7 - i % 8 of byte i >> 3, and the length must fit the clip", () => {
  const have = new Uint8Array(10);
  have[0] = have[9] = 1;
  assert.deepEqual([...bitfield(have)], [0x80, 0x40]);
  assert.deepEqual(indicesIn(bitfield(have), 10), [0, 9]);
  assert.throws(() => indicesIn(new Uint8Array([0xff]), 10), /2 bytes/);
});

test("sizes past the fix forms take msgpack-python's 8-, 16- and 32-bit forms", () => {
  const cases = [
    [255, "ccff"], [256, "cd0100"], [65536, "ce00010000"], [2 ** 32, "cf0000000100000000"], [-33, "d0df"],
    ["x".repeat(32), "d920" + "78".repeat(32)], [new Uint8Array(256), "c50100" + "00".repeat(256)],
  ]; // prettier-ignore
  for (const [value, frame] of cases) {
    assert.equal(hex(packMessage(value)), frame);
    assert.deepEqual(unpackMessage(fromHex(frame)), value);
  }
});
