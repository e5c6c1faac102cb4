// Decoding and checking what arrives from the gateway and from peers: CIDs,
// dag-pb/UnixFS nodes, msgpack messages, the data-channel protocol's
// messages, SHA-256 against a CID.
// Hand-written rather than bundled from npm so the gateway serves plain files
// with no build step; each decoder handles exactly what the viewer protocol
// and UnixFS files use, and throws on anything else. The protocol's constants
// and message vectors are contract.json's, which the Python side reads too
// (node/swarm/viewers/protocol.py, where the protocol is specified).

import contract from "./contract.json" with { type: "json" };

export const wire = contract.constants;

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

// Each value in its shortest msgpack form, as msgpack-python (the hub and the Python viewer) writes it,
// so both sides encode a message to the same bytes (contract.json's vectors hold them to it).
export function packMessage(value) {
  const out = [];
  const push = (...bytes) => out.push(...bytes);
  const chunks = [];
  const flush = () => {
    if (out.length) chunks.push(Uint8Array.from(out.splice(0)));
  };
  const u16 = (n) => [(n >>> 8) & 0xff, n & 0xff];
  const u32 = (n) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
  // A length-prefixed kind: the fix form below `fixLimit` (fixTag | n), else the 8-, 16- or 32-bit form.
  const header = (n, fixTag, fixLimit, tag8, tag16, tag32) => {
    if (fixTag !== null && n < fixLimit) push(fixTag | n);
    else if (tag8 !== null && n < 0x100) push(tag8, n);
    else if (n < 0x10000) push(tag16, ...u16(n));
    else push(tag32, ...u32(n));
  };
  const integer = (v) => {
    if (v >= 0) {
      if (v < 0x80) push(v);
      else if (v < 0x100) push(0xcc, v);
      else if (v < 0x10000) push(0xcd, ...u16(v));
      else if (v <= 0xffffffff) push(0xce, ...u32(v));
      else if (v <= Number.MAX_SAFE_INTEGER) push(0xcf, ...u32(Math.floor(v / 2 ** 32)), ...u32(v >>> 0));
      else throw new Error("integer out of range");
    } else if (v >= -32) push(v & 0xff);
    else if (v >= -0x80) push(0xd0, v & 0xff);
    else if (v >= -0x8000) push(0xd1, ...u16(v & 0xffff));
    else if (v >= -0x80000000) push(0xd2, ...u32(v >>> 0));
    else throw new Error("integer out of range");
  };
  const encode = (v) => {
    if (v === null || v === undefined) push(0xc0);
    else if (v === true) push(0xc3);
    else if (v === false) push(0xc2);
    else if (typeof v === "number") {
      if (Number.isInteger(v)) integer(v);
      else {
        const view = new DataView(new ArrayBuffer(8));
        view.setFloat64(0, v);
        push(0xcb, ...new Uint8Array(view.buffer));
      }
    } else if (typeof v === "string") {
      const bytes = new TextEncoder().encode(v);
      header(bytes.length, 0xa0, 32, 0xd9, 0xda, 0xdb);
      flush();
      chunks.push(bytes);
    } else if (v instanceof Uint8Array) {
      header(v.length, null, 0, 0xc4, 0xc5, 0xc6);
      flush();
      chunks.push(v);
    } else if (Array.isArray(v)) {
      header(v.length, 0x90, 16, null, 0xdc, 0xdd);
      v.forEach(encode);
    } else if (typeof v === "object") {
      const keys = Object.keys(v).filter((k) => v[k] !== undefined);
      header(keys.length, 0x80, 16, null, 0xde, 0xdf);
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

// ---------------------------------------------------------------- the data-channel protocol

export class ProtocolError extends Error {}

// The bitfield of `have` (a 0/1 array): piece i is bit 7 - i % 8 of byte i >> 3.
export function bitfield(have) {
  const out = new Uint8Array(Math.ceil(have.length / 8));
  have.forEach((held, i) => {
    if (held) out[i >> 3] |= 0x80 >> (i & 7);
  });
  return out;
}

export function indicesIn(field, count) {
  if (!(field instanceof Uint8Array) || field.length !== Math.ceil(count / 8)) {
    throw new ProtocolError(`a bitfield of ${Math.ceil(count / 8)} bytes is expected for ${count} pieces`);
  }
  const out = [];
  for (let i = 0; i < count; i++) if (field[i >> 3] & (0x80 >> (i & 7))) out.push(i);
  return out;
}

// A data-channel message from a peer of a clip with `count` pieces, checked as the Python viewer checks it:
// {t: "have", pieces} for a bitfield, else the message itself ({t, i} and, for a piece, o and d).
export function decodePeerMessage(data, count) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.length > wire.max_data_message_bytes) {
    throw new ProtocolError(`message of ${bytes.length} bytes, at most ${wire.max_data_message_bytes} allowed`);
  }
  let message;
  try {
    message = unpackMessage(bytes);
  } catch (err) {
    throw new ProtocolError(`not msgpack: ${err.message}`);
  }
  if (message === null || typeof message !== "object" || Array.isArray(message) || message instanceof Uint8Array ||
      typeof message.t !== "string") {
    throw new ProtocolError("a message is a map with a string 't'");
  } // prettier-ignore
  const index = () => {
    if (!Number.isInteger(message.i) || message.i < 0 || message.i >= count) {
      throw new ProtocolError(`piece ${message.i} out of range 0..${count - 1}`);
    }
    return message.i;
  };
  switch (message.t) {
    case "have":
      if ("have" in message) return { t: "have", pieces: indicesIn(message.have, count) };
      return { t: "have", i: index() };
    case "request":
    case "reject":
    case "cancel":
      return { t: message.t, i: index() };
    case "piece": {
      const { o: offset, d: chunk } = message;
      if (!Number.isInteger(offset) || !(chunk instanceof Uint8Array)) throw new ProtocolError("'piece' needs o and d");
      if (offset < 0 || !chunk.length || chunk.length > wire.piece_chunk_bytes ||
          offset + chunk.length > wire.max_piece_bytes) {
        throw new ProtocolError(`piece chunk at ${offset} of ${chunk.length} bytes is out of bounds`);
      } // prettier-ignore
      return { t: "piece", i: index(), o: offset, d: chunk };
    }
    default:
      throw new ProtocolError(`unknown data-channel message ${message.t}`);
  }
}
