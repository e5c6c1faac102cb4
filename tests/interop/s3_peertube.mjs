// PeerTube's object-storage calls, made the way PeerTube makes them, against any S3 endpoint.
//
// Emulates server/core/lib/object-storage/ of PeerTube (v7):
//   shared/client.ts                  S3Client({ endpoint, region, credentials, maxAttempts, forcePathStyle,
//                                      requestChecksumCalculation: 'WHEN_REQUIRED',
//                                      responseChecksumValidation: 'WHEN_REQUIRED' })
//   shared/object-storage-helpers.ts  uploadToStorage: lib-storage Upload { queueSize: 4, partSize:
//                                      MAX_UPLOAD_PART, leavePartsOnError: true, params: { ACL } }, then
//                                      "if (!response.Bucket) throw"; storeContent (a playlist string
//                                      through the same Upload: one PutObject); updateObjectACL /
//                                      updatePrefixACL (PutObjectAcl); removeObject (DeleteObject);
//                                      removePrefix / applyOnPrefix (ListObjectsV2 Prefix [+
//                                      ContinuationToken] then DeleteObject each, 10 at a time);
//                                      listKeysOfPrefix; makeAvailable (GetObject to a file);
//                                      createObjectReadStream (GetObject with the viewer's Range);
//                                      getObjectStorageFileSize (HeadObject ContentLength)
//   pre-signed-urls.ts                getSignedUrl(GetObject { ResponseContentDisposition:
//                                      `attachment; filename="${encodeURI(name)}"` }, { expiresIn: 86400 })
//   urls.ts                           public URL: `${protocol}//${host}/${bucket}/${key}` with
//                                      forcePathStyle, else `${protocol}//${bucket}.${host}/${key}`
// plus what a browser does with a public URL (anonymous GET and Range GET with an Origin header) and a
// multipart upload abandoned and aborted. Not PeerTube's own (marked "extra" in the output): a direct
// PutObject of a file stream, the only way this SDK sends aws-chunked with a CRC32 trailer (lib-storage
// buffers every part), and MaxKeys 2 pagination of ListObjectsV2.
//
// Usage (or the S3_* environment variables of the same names):
//   node s3_peertube.mjs --endpoint http://127.0.0.1:9000 --region us-east-1 --access-key-id K
//        --secret-access-key S --bucket B --workdir DIR [--checksum when_required|when_supported]
//        [--addressing path|virtual] [--public-base URL] [--origin https://peertube.example]
//        [--size-mib 25] [--part-size-mib 5]
// --checksum when_required is what PeerTube sets; when_supported is the SDK's default (CRC32 on every
// PutObject/UploadPart, checked on GetObject responses). --addressing virtual needs a host name endpoint
// (http://s3.localhost:9000); names under .localhost are resolved to 127.0.0.1 in this process.
// Prints one JSON line; exits 1 with "FAIL <step>: <why>" on stderr at the first failure.

import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import dns from 'node:dns'

import {
  AbortMultipartUploadCommand, CreateMultipartUploadCommand, DeleteObjectCommand, GetObjectCommand,
  HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, ListPartsCommand,
  PutObjectAclCommand, PutObjectCommand, S3Client, UploadPartCommand
} from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { getSignedUrl } from '@aws-sdk/s3-request-presigner'

const MiB = 1024 * 1024

// ---------------------------------------------------------------------------------------------------
// Arguments

function parseArgs (argv) {
  const names = {
    endpoint: 'S3_ENDPOINT', region: 'S3_REGION', 'access-key-id': 'S3_ACCESS_KEY_ID',
    'secret-access-key': 'S3_SECRET_ACCESS_KEY', bucket: 'S3_BUCKET', workdir: 'S3_WORKDIR',
    checksum: 'S3_CHECKSUM', addressing: 'S3_ADDRESSING', 'public-base': 'S3_PUBLIC_BASE',
    origin: 'S3_ORIGIN', 'size-mib': 'S3_SIZE_MIB', 'part-size-mib': 'S3_PART_SIZE_MIB'
  }
  const out = {}
  for (const [name, env] of Object.entries(names)) if (process.env[env]) out[name] = process.env[env]
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i])
    if (!m || !(m[1] in names)) die('arguments', `unknown argument ${argv[i]}`)
    out[m[1]] = m[2] ?? argv[++i]
  }
  for (const need of ['endpoint', 'region', 'access-key-id', 'secret-access-key', 'bucket', 'workdir']) {
    if (!out[need]) die('arguments', `--${need} (or ${names[need]}) is required`)
  }
  out.checksum = (out.checksum ?? 'when_required').toLowerCase()
  if (!['when_required', 'when_supported'].includes(out.checksum)) die('arguments', '--checksum when_required|when_supported')
  out.addressing = out.addressing ?? 'path'
  if (!['path', 'virtual'].includes(out.addressing)) die('arguments', '--addressing path|virtual')
  if (out.addressing === 'virtual' && /^(\d+\.){3}\d+$|^\[/.test(new URL(out.endpoint).hostname)) {
    die('arguments', '--addressing virtual needs a host name endpoint (http://s3.localhost:PORT): against an IP address ' +
      'the SDK silently sends path-style requests, and PeerTube would build public URLs http://BUCKET.IP/ that do not resolve')
  }
  out.origin = out.origin ?? 'https://peertube.example'
  out.sizeMiB = Number(out['size-mib'] ?? 25)
  out.partSize = Math.round(Number(out['part-size-mib'] ?? 5) * MiB)
  return out
}

function die (step, why) {
  process.stderr.write(`FAIL ${step}: ${why}\n`)
  process.exit(1)
}

// ---------------------------------------------------------------------------------------------------
// Helpers

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex')
const md5 = (buf) => createHash('md5').update(buf).digest()

/** Deterministic bytes that do not compress: a SHA-256 counter stream. */
function gen (size, seed) {
  const out = Buffer.allocUnsafe(size)
  let offset = 0
  for (let counter = 0; offset < size; counter++) {
    const block = createHash('sha256').update(`${seed}:${counter}`).digest()
    offset += block.copy(out, offset)
  }
  return out
}

/** The ETag S3 gives a multipart object: md5 of the parts' md5s, a dash, the part count. */
function multipartEtag (data, partSize) {
  const digests = []
  for (let o = 0; o < data.length; o += partSize) digests.push(md5(data.subarray(o, o + partSize)))
  return `"${md5(Buffer.concat(digests)).toString('hex')}-${digests.length}"`
}

// A departure from S3 that none of PeerTube's calls depends on: recorded in "deviations", not fatal.
const deviations = []
function soft (step, cond, why) {
  if (!cond) deviations.push(`${step}: ${typeof why === 'function' ? why() : why}`)
}

function check (step, cond, why) {
  if (!cond) die(step, typeof why === 'function' ? why() : why)
}

async function expectError (step, promise, status, names, { lenient = false } = {}) {
  try {
    await promise
  } catch (err) {
    const got = err?.$metadata?.httpStatusCode
    ;(lenient ? soft : check)(step, got === status && (!names || names.includes(err.name)),
      `expected HTTP ${status} ${names ? names.join('|') : ''}, got ${got} ${err.name}: ${String(err.message).split('\n')[0]}`)
    return err
  }
  die(step, `expected HTTP ${status}, the call succeeded`)
}

/** *.localhost names are loopback (RFC 6761); the system resolver here does not know them. */
function lookupLocalhost (hostname, options, callback) {
  if (typeof options === 'function') { callback = options; options = {} }
  if (hostname === 'localhost' || hostname.endsWith('.localhost')) {
    if (options?.all) return callback(null, [{ address: '127.0.0.1', family: 4 }])
    return callback(null, '127.0.0.1', 4)
  }
  return dns.lookup(hostname, options, callback)
}

let undiciDispatcher
/** Plain fetch(); for *.localhost hosts, undici's fetch with the loopback lookup above. */
async function plainFetch (url, init = {}) {
  const host = new URL(url).hostname
  if (!host.endsWith('.localhost')) return fetch(url, init)
  const undici = await import('undici')
  undiciDispatcher ??= new undici.Agent({ connect: { lookup: lookupLocalhost } })
  return undici.fetch(url, { ...init, dispatcher: undiciDispatcher })
}

// ---------------------------------------------------------------------------------------------------
// What went on the wire, as the SDK finished it (after signing), one summary per operation.

const WIRE_HEADERS = [
  'content-length', 'content-encoding', 'content-md5', 'content-type', 'transfer-encoding', 'expect',
  'x-amz-content-sha256', 'x-amz-decoded-content-length', 'x-amz-trailer', 'x-amz-sdk-checksum-algorithm',
  'x-amz-checksum-crc32', 'x-amz-checksum-crc32c', 'x-amz-checksum-mode', 'x-amz-acl', 'range'
]
const wire = {}
function recordWire (client) {
  client.middlewareStack.addRelativeTo((next, context) => async (args) => {
    const headers = Object.fromEntries(Object.entries(args.request.headers).map(([k, v]) => [k.toLowerCase(), v]))
    const seen = {}
    for (const h of WIRE_HEADERS) if (h in headers) seen[h] = h === 'content-md5' || h.startsWith('x-amz-checksum-crc') ? '(present)' : headers[h]
    const signed = /SignedHeaders=([^,]+)/.exec(headers.authorization ?? '')
    if (signed) seen.signed_headers = signed[1]
    seen.host = headers.host
    seen.path = args.request.path
    const chunked = String(headers['content-encoding'] ?? '').includes('aws-chunked')
    wire[context.commandName + (chunked ? ' (aws-chunked body)' : '')] ??= seen
    return next(args)
  }, { relation: 'after', toMiddleware: 'httpSigningMiddleware', name: 'medianodeWireRecorder', override: true })
}

// ---------------------------------------------------------------------------------------------------

async function main () {
  const opt = parseArgs(process.argv.slice(2))
  mkdirSync(opt.workdir, { recursive: true })
  const endpoint = new URL(opt.endpoint)
  const forcePathStyle = opt.addressing === 'path'
  const bucket = opt.bucket
  const run = randomBytes(4).toString('hex')
  const uuid = `${randomBytes(4).toString('hex')}-7f3e-4c2a-9d1b-${randomBytes(6).toString('hex')}`
  const prefix = `peertube-${opt.checksum.replace('_', '-')}-${run}/` // no "_" in the first segment: moto_server routes unsigned "/a_b/..." to a service "a"
  const steps = []
  const measured = {}
  const extra = []
  const t0 = performance.now()
  const step = async (name, fn, { isExtra = false } = {}) => {
    const start = performance.now()
    const result = await fn()
    steps.push(name)
    if (isExtra) extra.push(name)
    measured[`${name}_ms`] = Math.round(performance.now() - start)
    return result
  }

  // shared/client.ts
  const clientConfig = {
    endpoint: opt.endpoint,
    region: opt.region,
    credentials: { accessKeyId: opt['access-key-id'], secretAccessKey: opt['secret-access-key'] },
    maxAttempts: 3, // object_storage.max_request_attempts default
    forcePathStyle
  }
  if (opt.checksum === 'when_required') {
    clientConfig.requestChecksumCalculation = 'WHEN_REQUIRED'
    clientConfig.responseChecksumValidation = 'WHEN_REQUIRED'
  }
  if (!forcePathStyle) {
    clientConfig.requestHandler = { httpAgent: new http.Agent({ keepAlive: true, lookup: lookupLocalhost }) }
  }
  const s3 = new S3Client(clientConfig)
  recordWire(s3)

  // urls.ts buildBaseUrl
  const publicBase = opt['public-base']
    ? opt['public-base'].replace(/\/?$/, '/')
    : forcePathStyle
      ? `${endpoint.protocol}//${endpoint.host}/${bucket}/`
      : `${endpoint.protocol}//${bucket}.${endpoint.host}/`
  const publicUrl = (key) => publicBase + key.split('/').map(encodeURIComponent).join('/')

  const uploadToStorage = async (key, content, acl) => {
    const upload = new Upload({
      client: s3,
      queueSize: 4,
      partSize: opt.partSize,
      leavePartsOnError: true,
      params: { Body: content, Bucket: bucket, Key: key, ACL: acl }
    })
    const response = await upload.done()
    if (!response.Bucket) die('upload', `Error uploading ${key} to bucket ${bucket}: no Bucket in ${JSON.stringify(response)}`)
    return response
  }

  // ---- a web video, multipart through lib-storage ----
  const bigSize = Math.round(opt.sizeMiB * MiB) + 12345
  const big = gen(bigSize, `peertube-${run}`)
  const bigPath = join(opt.workdir, `${uuid}-720.mp4`)
  writeFileSync(bigPath, big)
  const bigKey = `${prefix}web-videos/${uuid}-720.mp4`
  const bigUpload = await step('upload_multipart_lib_storage', () => uploadToStorage(bigKey, createReadStream(bigPath), 'public-read'))
  measured.upload_bytes = bigSize
  measured.upload_parts = Math.ceil(bigSize / opt.partSize)
  measured.upload_mib_s = +(bigSize / MiB / (measured.upload_multipart_lib_storage_ms / 1000)).toFixed(1)
  const expectBigEtag = multipartEtag(big, opt.partSize)
  check('upload_multipart_lib_storage', bigUpload.ETag === expectBigEtag,
    `CompleteMultipartUpload ETag ${bigUpload.ETag}, expected ${expectBigEtag}`)
  check('upload_multipart_lib_storage', bigUpload.Key === bigKey, `Key ${bigUpload.Key}`)
  measured.multipart_etag = bigUpload.ETag

  // ---- HLS files: storeContent (a string) and storeObject (small files), each one PutObject ----
  const hlsPrefix = `${prefix}streaming-playlists/hls/${uuid}/`
  const playlist = `#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-STREAM-INF:BANDWIDTH=1000000\n${uuid}-720.m3u8\n`
  const hlsFiles = {
    [`${hlsPrefix}${uuid}-master.m3u8`]: Buffer.from(playlist),
    [`${hlsPrefix}${uuid}-720.m3u8`]: Buffer.from('#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nsegment-0.ts\n'),
    [`${hlsPrefix}segments-sha256.json`]: Buffer.from(JSON.stringify({ [`${uuid}-720-fragmented.mp4`]: {} })),
    [`${hlsPrefix}${uuid}-720-fragmented.mp4`]: gen(300 * 1024 + 5, `frag-${run}`),
    [`${hlsPrefix}${uuid}-480-fragmented.mp4`]: gen(200 * 1024 + 9, `frag480-${run}`)
  }
  await step('put_small_with_acl', async () => {
    for (const [key, data] of Object.entries(hlsFiles)) {
      const content = key.endsWith('.m3u8') || key.endsWith('.json') ? data.toString() : data
      const response = await uploadToStorage(key, content, 'public-read')
      check('put_small_with_acl', response.ETag === `"${md5(data).toString('hex')}"`,
        `PutObject ETag ${response.ETag} for ${key}, expected the body's MD5`)
    }
  })

  // ---- getObjectStorageFileSize ----
  await step('head_object', async () => {
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: bigKey }))
    check('head_object', head.ContentLength === bigSize, `ContentLength ${head.ContentLength}, expected ${bigSize}`)
    check('head_object', head.ETag === expectBigEtag, `HeadObject ETag ${head.ETag}, expected ${expectBigEtag}`)
    await expectError('head_object_missing', s3.send(new HeadObjectCommand({ Bucket: bucket, Key: `${prefix}nope` })), 404, ['NotFound'])
  })

  // ---- createObjectReadStream with the viewer's Range, and makeAvailable ----
  await step('get_object_range', async () => {
    for (const [range, start, end] of [
      ['bytes=0-0', 0, 0],
      ['bytes=1048576-2097151', MiB, 2 * MiB - 1],
      [`bytes=${bigSize - 1000}-`, bigSize - 1000, bigSize - 1],
      ['bytes=-500', bigSize - 500, bigSize - 1]
    ]) {
      const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: bigKey, Range: range }))
      const body = Buffer.from(await res.Body.transformToByteArray())
      check('get_object_range', res.$metadata.httpStatusCode === 206, `${range}: HTTP ${res.$metadata.httpStatusCode}`)
      check('get_object_range', res.ContentRange === `bytes ${start}-${end}/${bigSize}`, `${range}: Content-Range ${res.ContentRange}`)
      check('get_object_range', res.ContentLength === end - start + 1, `${range}: Content-Length ${res.ContentLength}`)
      check('get_object_range', body.equals(big.subarray(start, end + 1)), `${range}: wrong bytes`)
    }
  })
  await step('get_object_to_file', async () => {
    const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: bigKey }))
    const dest = join(opt.workdir, 'made-available.mp4')
    await pipeline(res.Body, createWriteStream(dest))
    check('get_object_to_file', sha256(readFileSync(dest)) === sha256(big), 'downloaded bytes differ')
  })

  // ---- pre-signed-urls.ts: a download link fetched by a browser ----
  await step('presigned_get', async () => {
    const downloadFilename = 'My vidéo 720p.mp4'
    const disposition = `attachment; filename="${encodeURI(downloadFilename)}"`
    const command = new GetObjectCommand({ Bucket: bucket, Key: bigKey, ResponseContentDisposition: disposition })
    const url = await getSignedUrl(s3, command, { expiresIn: 3600 * 24 })
    check('presigned_get', url.includes('X-Amz-Signature=') && url.includes('response-content-disposition='), `URL ${url}`)
    const res = await plainFetch(url)
    const body = Buffer.from(await res.arrayBuffer())
    check('presigned_get', res.status === 200, `HTTP ${res.status}: ${body.subarray(0, 300)}`)
    check('presigned_get', res.headers.get('content-disposition') === disposition,
      `Content-Disposition ${res.headers.get('content-disposition')}, expected ${disposition}`)
    check('presigned_get', body.length === bigSize && sha256(body) === sha256(big), 'presigned GET bytes differ')
    const tampered = url.replace(/X-Amz-Signature=[0-9a-f]{4}/, 'X-Amz-Signature=0000')
    measured.presigned_tampered_status = (await plainFetch(tampered).then(async r => { await r.arrayBuffer(); return r.status }))
    soft('presigned_get', measured.presigned_tampered_status === 403, `a presigned URL with a wrong signature got HTTP ${measured.presigned_tampered_status}`)
    measured.presigned_url_host = new URL(url).host
  })

  // ---- listKeysOfPrefix, then MaxKeys 2 pages ----
  await step('list_objects_v2_prefix', async () => {
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: hlsPrefix }))
    const keys = (listed.Contents ?? []).map(c => c.Key).sort()
    check('list_objects_v2_prefix', JSON.stringify(keys) === JSON.stringify(Object.keys(hlsFiles).sort()), `listed ${JSON.stringify(keys)}`)
    check('list_objects_v2_prefix', listed.KeyCount === keys.length && listed.IsTruncated === false, `KeyCount ${listed.KeyCount} IsTruncated ${listed.IsTruncated}`)
    for (const c of listed.Contents) {
      check('list_objects_v2_prefix', c.Size === hlsFiles[c.Key].length, `Size of ${c.Key}: ${c.Size}`)
      check('list_objects_v2_prefix', c.ETag === `"${md5(hlsFiles[c.Key]).toString('hex')}"`, `ETag of ${c.Key}: ${c.ETag}`)
    }
  })
  await step('list_objects_v2_paginated', async () => {
    const keys = []
    let token
    let pages = 0
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: hlsPrefix, MaxKeys: 2, ContinuationToken: token }))
      pages++
      check('list_objects_v2_paginated', (page.Contents ?? []).length <= 2, `page of ${page.Contents?.length}`)
      check('list_objects_v2_paginated', page.MaxKeys === 2 && page.KeyCount === (page.Contents ?? []).length, `MaxKeys ${page.MaxKeys} KeyCount ${page.KeyCount}`)
      soft('list_objects_v2_paginated', token === undefined ? !page.ContinuationToken : page.ContinuationToken === token, `ContinuationToken not echoed (got ${page.ContinuationToken}); PeerTube's applyOnPrefix passes it on`)
      keys.push(...(page.Contents ?? []).map(c => c.Key))
      check('list_objects_v2_paginated', page.IsTruncated === Boolean(page.NextContinuationToken), `IsTruncated ${page.IsTruncated} NextContinuationToken ${page.NextContinuationToken}`)
      token = page.IsTruncated ? page.NextContinuationToken : undefined
      check('list_objects_v2_paginated', pages < 20, 'pagination does not end')
    } while (token)
    const expected = Object.keys(hlsFiles).sort()
    check('list_objects_v2_paginated', JSON.stringify(keys) === JSON.stringify(expected), `paged keys ${JSON.stringify(keys)} (must be in key order)`)
    check('list_objects_v2_paginated', pages === Math.ceil(expected.length / 2), `${pages} pages`)
    measured.list_pages = pages
  }, { isExtra: true })

  // ---- a browser on a public URL ----
  const anonymous = async (step, key, { status, range, cors = true, bytes } = {}) => {
    const headers = { Origin: opt.origin }
    if (range) headers.Range = range
    const res = await plainFetch(publicUrl(key), { headers })
    const body = Buffer.from(await res.arrayBuffer())
    check(step, res.status === status, `anonymous GET ${publicUrl(key)}${range ? ' ' + range : ''}: HTTP ${res.status}, expected ${status}: ${body.subarray(0, 200)}`)
    if (cors) {
      const allow = res.headers.get('access-control-allow-origin')
      check(step, allow === '*' || allow === opt.origin, `Access-Control-Allow-Origin ${allow} on the anonymous GET`)
    }
    if (bytes) check(step, body.equals(bytes), 'anonymous GET bytes differ')
    return res
  }
  await step('anonymous_get_public', async () => {
    await anonymous('anonymous_get_public', bigKey, { status: 200, bytes: big })
    const res = await anonymous('anonymous_get_public', bigKey, { status: 206, range: 'bytes=100-199', bytes: big.subarray(100, 200) })
    check('anonymous_get_public', res.headers.get('content-range') === `bytes 100-199/${bigSize}`, `Content-Range ${res.headers.get('content-range')}`)
    const m3u8 = `${hlsPrefix}${uuid}-master.m3u8`
    await anonymous('anonymous_get_public', m3u8, { status: 200, bytes: hlsFiles[m3u8] })
    const pre = await plainFetch(publicUrl(m3u8), { method: 'OPTIONS', headers: { Origin: opt.origin, 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'range' } })
    await pre.arrayBuffer()
    measured.cors_preflight_status = pre.status
    measured.cors_preflight_allow_origin = pre.headers.get('access-control-allow-origin')
  })

  // ---- updateObjectACL / updatePrefixACL: a video made private, and public again ----
  await step('put_object_acl_private', async () => {
    await s3.send(new PutObjectAclCommand({ Bucket: bucket, Key: bigKey, ACL: 'private' }))
    await anonymous('put_object_acl_private', bigKey, { status: 403, cors: false })
    const viaSdk = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: bigKey }))
    check('put_object_acl_private', viaSdk.ContentLength === bigSize, 'the owner lost access')
  })
  await step('update_prefix_acl', async () => {
    const applyOnPrefix = async (pfx, build, continuationToken) => {
      const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: pfx, ContinuationToken: continuationToken }))
      if (!Array.isArray(listed.Contents)) die('update_prefix_acl', `Cannot apply function on ${pfx} prefix: no files listed.`)
      for (let i = 0; i < listed.Contents.length; i += 10) {
        await Promise.all(listed.Contents.slice(i, i + 10).map(o => s3.send(build(o))))
      }
      // PeerTube passes listedObjects.ContinuationToken here (not NextContinuationToken).
      if (listed.IsTruncated) await applyOnPrefix(pfx, build, listed.ContinuationToken)
    }
    await applyOnPrefix(hlsPrefix, o => new PutObjectAclCommand({ Bucket: bucket, Key: o.Key, ACL: 'private' }))
    for (const key of Object.keys(hlsFiles)) await anonymous('update_prefix_acl', key, { status: 403, cors: false })
    await applyOnPrefix(hlsPrefix, o => new PutObjectAclCommand({ Bucket: bucket, Key: o.Key, ACL: 'public-read' }))
    for (const [key, data] of Object.entries(hlsFiles)) await anonymous('update_prefix_acl', key, { status: 200, bytes: data })
  })

  // ---- extra: a PutObject whose body is a file stream (aws-chunked + CRC32 trailer under WHEN_SUPPORTED) ----
  await step('put_object_stream', async () => {
    const data = gen(2 * MiB + 77, `stream-${run}`)
    const path = join(opt.workdir, 'stream.bin')
    writeFileSync(path, data)
    const key = `${prefix}extra/stream.bin`
    const put = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: createReadStream(path), ContentLength: data.length, ACL: 'private', ContentType: 'video/mp4' }))
    check('put_object_stream', put.ETag === `"${md5(data).toString('hex')}"`, `ETag ${put.ETag}`)
    if (put.ChecksumCRC32) measured.put_stream_crc32 = put.ChecksumCRC32
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, ChecksumMode: opt.checksum === 'when_supported' ? 'ENABLED' : undefined }))
    const body = Buffer.from(await got.Body.transformToByteArray())
    check('put_object_stream', body.equals(data), 'read back differs (was the aws-chunked framing stored?)')
    check('put_object_stream', got.ContentType === 'video/mp4', `ContentType ${got.ContentType}`)
    await anonymous('put_object_stream', key, { status: 403, cors: false })
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }))
  }, { isExtra: true })

  // ---- a multipart upload that is given up ----
  await step('multipart_abort', async () => {
    const key = `${prefix}web-videos/${uuid}-1080.mp4`
    const created = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ACL: 'public-read' }))
    check('multipart_abort', created.UploadId, 'no UploadId')
    const part = big.subarray(0, 5 * MiB)
    const uploaded = await s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: created.UploadId, PartNumber: 1, Body: part }))
    check('multipart_abort', uploaded.ETag === `"${md5(part).toString('hex')}"`, `UploadPart ETag ${uploaded.ETag}`)
    const parts = await s3.send(new ListPartsCommand({ Bucket: bucket, Key: key, UploadId: created.UploadId }))
    check('multipart_abort', parts.Parts?.length === 1 && parts.Parts[0].Size === part.length && parts.Parts[0].ETag === uploaded.ETag, `ListParts ${JSON.stringify(parts.Parts)}`)
    const before = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }))
    check('multipart_abort', (before.Uploads ?? []).some(u => u.UploadId === created.UploadId && u.Key === key), `ListMultipartUploads does not show ${created.UploadId}`)
    await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: created.UploadId }))
    const after = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }))
    check('multipart_abort', (after.Uploads ?? []).length === 0, `uploads left after abort: ${JSON.stringify(after.Uploads)}`)
    await expectError('multipart_abort', s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: created.UploadId, PartNumber: 2, Body: part })), 404, ['NoSuchUpload'], { lenient: true })
    await expectError('multipart_abort', s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })), 404, ['NotFound'])
  })

  // ---- removePrefix (list, then DeleteObject each) and removeObject ----
  await step('remove_prefix', async () => {
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: hlsPrefix }))
    check('remove_prefix', Array.isArray(listed.Contents), 'no files listed')
    for (let i = 0; i < listed.Contents.length; i += 10) {
      await Promise.all(listed.Contents.slice(i, i + 10).map(o => s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: o.Key }))))
    }
    const left = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: hlsPrefix }))
    check('remove_prefix', (left.Contents ?? []).length === 0 && left.KeyCount === 0, `left: ${JSON.stringify(left.Contents)}`)
    const again = await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${hlsPrefix}${uuid}-master.m3u8` }))
    check('remove_prefix', again.$metadata.httpStatusCode === 204, `DeleteObject of a missing key: HTTP ${again.$metadata.httpStatusCode}`)
  })
  await step('remove_object', async () => {
    const res = await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: bigKey }))
    check('remove_object', res.$metadata.httpStatusCode === 204, `HTTP ${res.$metadata.httpStatusCode}`)
    await expectError('remove_object', s3.send(new HeadObjectCommand({ Bucket: bucket, Key: bigKey })), 404, ['NotFound'])
    const left = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }))
    check('remove_object', (left.Contents ?? []).length === 0, `left under ${prefix}: ${JSON.stringify((left.Contents ?? []).map(c => c.Key))}`)
  })

  const versions = {}
  for (const name of ['@aws-sdk/client-s3', '@aws-sdk/lib-storage', '@aws-sdk/s3-request-presigner']) {
    versions[name] = JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url))).version
  }
  const result = {
    harness: 's3_peertube', ok: true, emulates: 'PeerTube server/core/lib/object-storage', sdk: versions,
    node: process.version, endpoint: opt.endpoint, addressing: opt.addressing,
    effective_addressing: Object.values(wire).some(w => String(w.host).startsWith(`${bucket}.`)) ? 'virtual' : 'path',
    checksum: opt.checksum,
    bucket, prefix, public_base: publicBase, steps, extra_steps: extra, measured,
    total_ms: Math.round(performance.now() - t0), deviations: [...new Set(deviations)], wire
  }
  process.stdout.write(JSON.stringify(result) + '\n')
}

main().catch((err) => die('uncaught', `${err?.name ?? ''} ${err?.message ?? err} ${err?.$metadata ? JSON.stringify(err.$metadata) : ''}\n${err?.stack ?? ''}`))
