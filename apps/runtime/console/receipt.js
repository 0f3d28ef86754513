// The receipt check the console shows: recompute the receipt's digest (the
// sha256 of its canonical JSON without `canonical_json_sha256` and
// `signature`), compare it with the two fields that repeat it, and verify
// the BIP-340 signature over it under `signer_pubkey`, which must be the key
// GET /internal/v1/receipts/signing-key publishes. Plain JavaScript (BigInt),
// so it runs in any page context, secure or not. Rules: docs/ARTIFACTS.md.

import { getJson } from "./api.js";
import { badge, h } from "./dom.js";

// ---- SHA-256 (FIPS 180-4) ----
const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** The sha256 digest of `bytes` (Uint8Array). */
export function sha256(bytes) {
  const bits = bytes.length * 8;
  const padded = new Uint8Array(Math.ceil((bytes.length + 9) / 64) * 64);
  padded.set(bytes);
  padded[bytes.length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(bits / 2 ** 32));
  view.setUint32(padded.length - 4, bits >>> 0);
  const state = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let block = 0; block < padded.length; block += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(block + i * 4);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    let [a, b, c, d, e, f, g, hh] = state;
    for (let i = 0; i < 64; i++) {
      const t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
      const t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    [a, b, c, d, e, f, g, hh].forEach((value, i) => { state[i] = (state[i] + value) >>> 0; });
  }
  const out = new Uint8Array(32);
  const outView = new DataView(out.buffer);
  state.forEach((value, i) => outView.setUint32(i * 4, value));
  return out;
}

// ---- Canonical JSON that keeps each literal's text ----
// The receipt was written by serde_json, so each string and number literal
// already has serde_json's encoding; canonical form only sorts the keys.

/** Parses JSON text into a tree whose leaves are their literal text. */
function parseRaw(text) {
  let at = 0;
  const space = () => { while (/\s/.test(text[at])) at++; };
  const literal = (pattern) => {
    pattern.lastIndex = at;
    const found = pattern.exec(text);
    if (!found) throw new Error(`bad JSON at ${at}`);
    at = pattern.lastIndex;
    return { raw: found[0] };
  };
  const value = () => {
    space();
    const c = text[at];
    if (c === "{") {
      at++;
      const members = [];
      space();
      if (text[at] === "}") { at++; return { members }; }
      for (;;) {
        space();
        const key = literal(/"(?:[^"\\]|\\.)*"/y).raw;
        space();
        if (text[at++] !== ":") throw new Error(`bad JSON at ${at}`);
        members.push([key, value()]);
        space();
        const next = text[at++];
        if (next === "}") return { members };
        if (next !== ",") throw new Error(`bad JSON at ${at}`);
      }
    }
    if (c === "[") {
      at++;
      const items = [];
      space();
      if (text[at] === "]") { at++; return { items }; }
      for (;;) {
        items.push(value());
        space();
        const next = text[at++];
        if (next === "]") return { items };
        if (next !== ",") throw new Error(`bad JSON at ${at}`);
      }
    }
    return literal(/"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null/y);
  };
  const tree = value();
  space();
  if (at !== text.length) throw new Error("trailing text after JSON");
  return tree;
}

const encoder = new TextEncoder();

/** Byte order of two keys (their decoded UTF-8), as the service sorts them. */
function byteOrder(a, b) {
  const x = encoder.encode(JSON.parse(a[0]));
  const y = encoder.encode(JSON.parse(b[0]));
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

function canonical(node) {
  if (node.members) {
    const sorted = [...node.members].sort(byteOrder);
    return `{${sorted.map(([key, value]) => `${key}:${canonical(value)}`).join(",")}}`;
  }
  if (node.items) return `[${node.items.map(canonical).join(",")}]`;
  return node.raw;
}

// ---- BIP-340 verification over secp256k1 ----
const P = 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2fn;
const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const G = [0x79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798n,
  0x483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8n];
const mod = (a, m = P) => ((a % m) + m) % m;

function power(base, exponent, m = P) {
  let result = 1n;
  base = mod(base, m);
  while (exponent > 0n) {
    if (exponent & 1n) result = (result * base) % m;
    base = (base * base) % m;
    exponent >>= 1n;
  }
  return result;
}

/** Affine point addition; `null` is the point at infinity. */
function add(p1, p2) {
  if (!p1) return p2;
  if (!p2) return p1;
  if (p1[0] === p2[0] && p1[1] !== p2[1]) return null;
  const lambda = p1[0] === p2[0]
    ? mod(3n * p1[0] * p1[0] * power(2n * p1[1], P - 2n))
    : mod((p2[1] - p1[1]) * power(p2[0] - p1[0], P - 2n));
  const x = mod(lambda * lambda - p1[0] - p2[0]);
  return [x, mod(lambda * (p1[0] - x) - p1[1])];
}

function multiply(point, scalar) {
  let result = null;
  for (let bit = BigInt(scalar.toString(2).length - 1); bit >= 0n; bit--) {
    result = add(result, result);
    if ((scalar >> bit) & 1n) result = add(result, point);
  }
  return result;
}

function liftX(x) {
  if (x >= P) return null;
  const c = mod(x * x * x + 7n);
  const y = power(c, (P + 1n) / 4n);
  if (power(y, 2n) !== c) return null;
  return [x, y % 2n === 0n ? y : P - y];
}

const toInt = (bytes) => BigInt(`0x${hex(bytes) || "0"}`);
const toBytes = (value) => fromHex(value.toString(16).padStart(64, "0"));
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
function fromHex(text) {
  if (!/^(?:[0-9a-f]{2})*$/.test(text)) throw new Error("not lowercase hex");
  return Uint8Array.from(text.match(/../g) || [], (pair) => parseInt(pair, 16));
}
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) { out.set(part, at); at += part.length; }
  return out;
};

function taggedHash(tag, data) {
  const tagHash = sha256(encoder.encode(tag));
  return sha256(concat(tagHash, tagHash, data));
}

/** BIP-340 `Verify(pk, m, sig)`. */
export function schnorrVerify(publicKey, message, signature) {
  if (publicKey.length !== 32 || message.length !== 32 || signature.length !== 64) return false;
  const point = liftX(toInt(publicKey));
  const r = toInt(signature.slice(0, 32));
  const s = toInt(signature.slice(32));
  if (!point || r >= P || s >= N) return false;
  const e = mod(toInt(taggedHash("BIP0340/challenge", concat(signature.slice(0, 32), publicKey, message))), N);
  const big = add(multiply(G, s), multiply([point[0], mod(-point[1])], e));
  return big !== null && big[1] % 2n === 0n && big[0] === r;
}

// ---- The check the page shows ----

/** Why `receiptText` (the route's bytes) does or does not verify, or `null` when it verifies. */
export function receiptProblem(receiptText, publishedKey) {
  const tree = parseRaw(receiptText);
  const signature = tree.members.find(([key]) => key === '"signature"');
  const stated = tree.members.find(([key]) => key === '"canonical_json_sha256"');
  if (!signature) return "the receipt is not signed";
  const body = { members: tree.members.filter(([key]) => key !== '"signature"' && key !== '"canonical_json_sha256"') };
  const digest = hex(sha256(encoder.encode(canonical(body))));
  const fields = Object.fromEntries(signature[1].members.map(([key, value]) => [JSON.parse(key), JSON.parse(value.raw)]));
  if (!stated || JSON.parse(stated[1].raw) !== digest) return "canonical_json_sha256 is not the digest of the receipt";
  if (fields.signed_sha256 !== digest) return "signed_sha256 is not the digest of the receipt";
  if (publishedKey && fields.signer_pubkey !== publishedKey) return "signer_pubkey is not the service's published signing key";
  if (!schnorrVerify(fromHex(fields.signer_pubkey), fromHex(digest), fromHex(fields.signature_hex))) return "the signature does not verify";
  return null;
}

/** The verified / not-verified mark of a receipt fetched as text. */
export async function checkReceipt(receiptText) {
  const key = await getJson("/internal/v1/receipts/signing-key", { missingIsNull: true }).catch(() => null);
  let problem;
  try {
    problem = receiptProblem(receiptText, key ? key.signer_pubkey : null);
  } catch (error) {
    problem = `the receipt could not be read (${error.message})`;
  }
  if (problem === "the receipt is not signed") return h("span", {}, badge("unsigned"), " The service signs no receipts (RUNTIME_RECEIPT_SIGNING_KEY_FILE is not set).");
  if (problem) return h("span", { id: "receipt-mark" }, badge("not-verified"), ` Not verified: ${problem}.`);
  return h("span", { id: "receipt-mark" }, badge("verified"), " Verified: the BIP-340 signature of the service's key covers this receipt.");
}
