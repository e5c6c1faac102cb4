// The browser's clip builder against the DAGs in tests/vectors/viewer_clips.json: node --test tests/js/
// The Python clip builder takes the same vectors in tests/fast/test_viewer_contract.py.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { ClipError, learnClip, loadClip, pieceAt } from "../../node/gateway/static/player/clip.js";

const { cases } = JSON.parse(readFileSync(new URL("../vectors/viewer_clips.json", import.meta.url)));
const GATEWAY = "http://gateway.test";

// A gateway serving exactly the case's blocks as ?format=raw; it records what was asked of it.
function serve(blocks, asked) {
  globalThis.fetch = async (url) => {
    const cid = new URL(url).pathname.replace("/ipfs/", "");
    asked.push(cid);
    if (!(cid in blocks)) return new Response("no such block", { status: 404 });
    return new Response(Buffer.from(blocks[cid], "hex"));
  };
}

for (const vector of cases) {
  test(vector.name, async () => {
    const asked = [];
    serve(vector.blocks, asked);
    if (vector.refused) {
      await assert.rejects(learnClip(GATEWAY, vector.root), ClipError);
      return;
    }
    const clip = await learnClip(GATEWAY, vector.root);
    assert.equal(clip.size, vector.size);
    const pieces = clip.pieces.map((p) => ({ cid: p.cid.string, offset: p.offset, block_bytes: p.blockSize }));
    assert.deepEqual(pieces, vector.pieces);
    assert.equal(clip.refusal === null, vector.swarm);
    for (const cid of asked) assert.ok(cid in vector.blocks, `asked for ${cid}, which the DAG does not need`);
    if (!vector.swarm) await assert.rejects(loadClip(GATEWAY, vector.root), /viewer swarm is not used/);
  });
}

test("a block that does not match its CID is refused", async () => {
  const vector = cases.find((c) => c.name.startsWith("raw leaves under"));
  const blocks = { ...vector.blocks, [vector.root]: vector.blocks[vector.root].replace(/.$/, "0") };
  serve(blocks, []);
  await assert.rejects(learnClip(GATEWAY, vector.root), /does not match/);
});

test("pieceAt finds the piece holding a byte", () => {
  const pieces = [{ offset: 0 }, { offset: 3 }, { offset: 5 }];
  assert.equal(pieceAt(pieces, 0), pieces[0]);
  assert.equal(pieceAt(pieces, 4), pieces[1]);
  assert.equal(pieceAt(pieces, 99), pieces[2]);
});
