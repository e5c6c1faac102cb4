// Decoding and checking what arrives from the gateway and from peers: CIDs,
// dag-pb/UnixFS nodes, msgpack messages, SHA-256 against a CID.
// Hand-written rather than bundled from npm so the gateway serves plain files
// with no build step; each decoder handles exactly what the viewer protocol
// and UnixFS files use, and throws on anything else.

const RAW = 0x55;
const DAG_PB = 0x70;
const SHA2_256 = 0x12;
const IDENTITY = 0x00;
const BASE32 = "abcdefghijklmnopqrstuvwxyz234567";
const BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

export const codecs = { RAW, DAG_PB };

export function readVarint(bytes, pos) {
  let value = 0;
  let shift = 1;
  for (let i = 0; i < 9; i++) {
    if (pos >= bytes.length) throw new Error("truncated varint");
    const b = bytes[pos++];
    value += (b & 0x7f) * shift;
    if (!(b & 0x80)) return [value, pos];
    shift *= 128;
  }
  throw new Error("varint too long");
}

function base32Decode(text) {
  const out = [];
  let bits = 0;
  let value = 0;
  for (const ch of text) {
    const v = BASE32.indexOf(ch);
    if (v < 0) throw new Error(`not base32: ${ch}`);
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return new Uint8Array(out);
}

function base32Encode(bytes) {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

function base58Decode(text) {
  const bytes = [0];
  for (const ch of text) {
    let carry = BASE58.indexOf(ch);
    if (carry < 0) throw new Error(`not base58: ${ch}`);
    for (let i = 0; i < bytes.length; i++) {
      carry += bytes[i] * 58;
      bytes[i] = carry & 0xff;
      carry >>= 8;
    }
    while (carry) {
      bytes.push(carry & 0xff);
      carry >>= 8;
    }
  }
  for (const ch of text) {
    if (ch !== "1") break;
    bytes.push(0);
  }
  return new Uint8Array(bytes.reverse());
}

function base58Encode(bytes) {
  const digits = [0];
  for (const b of bytes) {
    let carry = b;
    for (let i = 0; i < digits.length; i++) {
      carry += digits[i] << 8;
      digits[i] = carry % 58;
      carry = (carry / 58) | 0;
    }
    while (carry) {
      digits.push(carry % 58);
      carry = (carry / 58) | 0;
    }
  }
  let out = "";
  for (const b of bytes) {
    if (b !== 0) break;
    out += "1";
  }
  for (let i = digits.length - 1; i >= 0; i--) out += BASE58[digits[i]];
  return out;
}

// A CID from its binary form: {version, codec, hashCode, digest, string}.
export function cidFromBytes(bytes) {
  if (bytes.length === 34 && bytes[0] === SHA2_256 && bytes[1] === 32) {
    return { version: 0, codec: DAG_PB, hashCode: SHA2_256, digest: bytes.subarray(2), string: base58Encode(bytes) };
  }
  let pos = 0;
  let version, codec, hashCode, length;
  [version, pos] = readVarint(bytes, pos);
  if (version !== 1) throw new Error(`CID version ${version}`);
  [codec, pos] = readVarint(bytes, pos);
  [hashCode, pos] = readVarint(bytes, pos);
  [length, pos] = readVarint(bytes, pos);
  if (pos + length !== bytes.length) throw new Error("CID digest length does not match");
  if (hashCode !== SHA2_256 && hashCode !== IDENTITY) throw new Error(`hash function 0x${hashCode.toString(16)}`);
  if (hashCode === SHA2_256 && length !== 32) throw new Error("sha2-256 digest is not 32 bytes");
  return { version, codec, hashCode, digest: bytes.subarray(pos), string: "b" + base32Encode(bytes) };
}

export function parseCid(text) {
  if (/^Qm[1-9A-HJ-NP-Za-km-z]{44}$/.test(text)) return cidFromBytes(base58Decode(text));
  if (text.startsWith("b")) return cidFromBytes(base32Decode(text.slice(1)));
  throw new Error(`unsupported CID: ${text.slice(0, 80)}`);
}

// True when `bytes` are the block `cid` names.
export async function blockMatches(cid, bytes) {
  if (cid.hashCode === IDENTITY) return equalBytes(cid.digest, bytes);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return equalBytes(digest, cid.digest);
}

function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---------------------------------------------------------------- protobuf (dag-pb, UnixFS)

function* protobufFields(bytes) {
  let pos = 0;
  while (pos < bytes.length) {
    let key, value;
    [key, pos] = readVarint(bytes, pos);
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) {
      [value, pos] = readVarint(bytes, pos);
    } else if (wire === 2) {
      let length;
      [length, pos] = readVarint(bytes, pos);
      if (pos + length > bytes.length) throw new Error("truncated protobuf field");
      value = bytes.subarray(pos, pos + length);
      pos += length;
    } else {
      throw new Error(`protobuf wire type ${wire}`);
    }
    yield [field, wire, value];
  }
}

// A dag-pb node: {links: [{cid, name, size}], data: Uint8Array|null}.
export function decodeDagPb(bytes) {
  const links = [];
  let data = null;
  for (const [field, wire, value] of protobufFields(bytes)) {
    if (field === 2 && wire === 2) {
      const link = { cid: null, name: "", size: 0 };
      for (const [f, w, v] of protobufFields(value)) {
        if (f === 1 && w === 2) link.cid = cidFromBytes(v);
        else if (f === 2 && w === 2) link.name = new TextDecoder().decode(v);
        else if (f === 3 && w === 0) link.size = v;
      }
      if (!link.cid) throw new Error("dag-pb link without a hash");
      links.push(link);
    } else if (field === 1 && wire === 2) {
      data = value;
    }
  }
  return { links, data };
}

// UnixFS Data: {type, data, fileSize, blockSizes}. Types: 0 raw, 2 file.
export function decodeUnixFs(bytes) {
  const node = { type: -1, data: new Uint8Array(0), fileSize: null, blockSizes: [] };
  for (const [field, wire, value] of protobufFields(bytes)) {
    if (field === 1 && wire === 0) node.type = value;
    else if (field === 2 && wire === 2) node.data = value;
    else if (field === 3 && wire === 0) node.fileSize = value;
    else if (field === 4 && wire === 0) node.blockSizes.push(value);
    else if (field === 4 && wire === 2) {
      let pos = 0;
      while (pos < value.length) {
        let size;
        [size, pos] = readVarint(value, pos);
        node.blockSizes.push(size);
      }
    }
  }
  return node;
}

// ---------------------------------------------------------------- msgpack

export function packMessage(value) {
  const out = [];
  const push = (...bytes) => out.push(...bytes);
  const chunks = [];
  const flush = () => {
    if (out.length) chunks.push(Uint8Array.from(out.splice(0)));
  };
  const u32 = (n) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
  const encode = (v) => {
    if (v === null || v === undefined) push(0xc0);
    else if (v === true) push(0xc3);
    else if (v === false) push(0xc2);
    else if (typeof v === "number") {
      if (!Number.isInteger(v)) {
        const view = new DataView(new ArrayBuffer(8));
        view.setFloat64(0, v);
        push(0xcb, ...new Uint8Array(view.buffer));
      } else if (v >= 0 && v < 128) push(v);
      else if (v < 0 && v >= -32) push(v & 0xff);
      else if (v >= 0 && v <= 0xffffffff) push(0xce, ...u32(v));
      else if (v >= 0) push(0xcf, ...u32(Math.floor(v / 2 ** 32)), ...u32(v >>> 0));
      else if (v >= -0x80000000) push(0xd2, ...u32(v >>> 0));
      else throw new Error("integer out of range");
    } else if (typeof v === "string") {
      const bytes = new TextEncoder().encode(v);
      if (bytes.length < 32) push(0xa0 | bytes.length);
      else push(0xdb, ...u32(bytes.length));
      flush();
      chunks.push(bytes);
    } else if (v instanceof Uint8Array) {
      push(0xc6, ...u32(v.length));
      flush();
      chunks.push(v);
    } else if (Array.isArray(v)) {
      push(0xdd, ...u32(v.length));
      v.forEach(encode);
    } else if (typeof v === "object") {
      const keys = Object.keys(v).filter((k) => v[k] !== undefined);
      push(0xdf, ...u32(keys.length));
      for (const k of keys) {
        encode(k);
        encode(v[k]);
      }
    } else throw new Error(`cannot pack ${typeof v}`);
  };
  encode(value);
  flush();
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const result = new Uint8Array(total);
  let pos = 0;
  for (const c of chunks) {
    result.set(c, pos);
    pos += c.length;
  }
  return result;
}

export function unpackMessage(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  const need = (n) => {
    if (pos + n > bytes.length) throw new Error("truncated msgpack");
  };
  const take = (n) => {
    need(n);
    const s = bytes.subarray(pos, pos + n);
    pos += n;
    return s;
  };
  const uint = (n) => {
    need(n);
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + bytes[pos++];
    return v;
  };
  const str = (n) => new TextDecoder("utf-8", { fatal: true }).decode(take(n));
  const array = (n) => Array.from({ length: n }, () => decode());
  const map = (n) => {
    const m = {};
    for (let i = 0; i < n; i++) {
      const k = decode();
      if (typeof k !== "string") throw new Error("map keys are strings");
      m[k] = decode();
    }
    return m;
  };
  const decode = () => {
    const b = uint(1);
    if (b < 0x80) return b;
    if (b >= 0xe0) return b - 256;
    if ((b & 0xf0) === 0x80) return map(b & 0x0f);
    if ((b & 0xf0) === 0x90) return array(b & 0x0f);
    if ((b & 0xe0) === 0xa0) return str(b & 0x1f);
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return take(uint(1)).slice();
      case 0xc5: return take(uint(2)).slice();
      case 0xc6: return take(uint(4)).slice();
      case 0xca: need(4); pos += 4; return view.getFloat32(pos - 4);
      case 0xcb: need(8); pos += 8; return view.getFloat64(pos - 8);
      case 0xcc: return uint(1);
      case 0xcd: return uint(2);
      case 0xce: return uint(4);
      case 0xcf: return uint(8);
      case 0xd0: need(1); pos += 1; return view.getInt8(pos - 1);
      case 0xd1: need(2); pos += 2; return view.getInt16(pos - 2);
      case 0xd2: need(4); pos += 4; return view.getInt32(pos - 4);
      case 0xd9: return str(uint(1));
      case 0xda: return str(uint(2));
      case 0xdb: return str(uint(4));
      case 0xdc: return array(uint(2));
      case 0xdd: return array(uint(4));
      case 0xde: return map(uint(2));
      case 0xdf: return map(uint(4));
      default: throw new Error(`msgpack type 0x${b.toString(16)} not used by this protocol`);
    }
  };
  const value = decode();
  if (pos !== bytes.length) throw new Error("trailing bytes after msgpack message");
  return value;
}
