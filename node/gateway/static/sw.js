// medianode's Service Worker: answers the <video> element's Range requests for
// /watch/stream/{cid} with bytes the page has verified (from peers or the
// gateway). The page holds the pieces; this worker only asks it for them,
// piece by piece, as the element reads. Where no page has the clip open, the
// request goes to the gateway's /ipfs/{cid} as it is.

const STREAM = "/watch/stream/";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== self.location.origin || !url.pathname.startsWith(STREAM)) return;
  event.respondWith(answer(event, url.pathname.slice(STREAM.length)));
});

function ask(client, message) {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = (event) => resolve(event.data);
    client.postMessage(message, [channel.port2]);
  });
}

function fromGateway(request, cid) {
  const headers = {};
  const range = request.headers.get("range");
  if (range) headers.range = range;
  return fetch(`/ipfs/${cid}`, { headers });
}

async function answer(event, cid) {
  const client = event.clientId ? await self.clients.get(event.clientId) : null;
  if (!client) return fromGateway(event.request, cid);
  const meta = await ask(client, { op: "meta", cid });
  if (meta.missing) return fromGateway(event.request, cid);
  const size = meta.size;
  const range = /^bytes=(\d*)-(\d*)$/.exec(event.request.headers.get("range") || "bytes=0-");
  let start = 0;
  let end = size - 1;
  if (range && range[1] !== "") {
    start = Number(range[1]);
    if (range[2] !== "") end = Math.min(end, Number(range[2]));
  } else if (range && range[2] !== "") {
    start = Math.max(0, size - Number(range[2]));
  }
  if (!range || start > end || start >= size) {
    return new Response(null, { status: 416, headers: { "Content-Range": `bytes */${size}` } });
  }
  let position = start;
  const body = new ReadableStream({
    async pull(controller) {
      const reply = await ask(client, { op: "read", cid, offset: position });
      if (reply.error || reply.missing || !reply.bytes || !reply.bytes.length) {
        controller.error(new Error(reply.error || "the page closed the clip"));
        return;
      }
      const bytes = reply.bytes.subarray(0, end + 1 - position);
      position += bytes.length;
      controller.enqueue(bytes);
      if (position > end) controller.close();
    },
  }, { highWaterMark: 0 });
  return new Response(body, {
    status: 206,
    headers: {
      "Content-Type": meta.type,
      "Content-Length": String(end - start + 1),
      "Content-Range": `bytes ${start}-${end}/${size}`,
      "Accept-Ranges": "bytes",
    },
  });
}
