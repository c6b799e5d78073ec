/**
 * The node-to-node relay's wire format: a stream of frames, each a type byte, a 4-byte big-endian length and
 * that many bytes. A record's bytes travel as they are (no re-encoding, so the waiting client gets them byte for
 * byte), and a reader needs no more than one frame in hand.
 */
export const FRAME = {
  /** The job's answer has this content type (payload: it, UTF-8). */
  state: 0x53,
  /** Records, exactly as the running node's worker read them from Ollama. */
  chunk: 0x43,
  /** The running node kept no more records for this reader: the job's stored stream has the rest at its end. */
  gap: 0x47,
  /** The job ended on the running node: its row says how. */
  end: 0x45,
  /** Nothing new (a model loading, a slow token): the connection is alive. */
  keepAlive: 0x4b,
} as const;

export type FrameType = (typeof FRAME)[keyof typeof FRAME];
export interface Frame {
  type: FrameType;
  payload: Uint8Array;
}

const HEADER_BYTES = 5;
const EMPTY = new Uint8Array(0);
const KNOWN = new Set<number>(Object.values(FRAME));

/** One frame: type, length, payload. */
export function encodeFrame(type: FrameType, payload: Uint8Array = EMPTY): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + payload.byteLength);
  out[0] = type;
  new DataView(out.buffer).setUint32(1, payload.byteLength);
  out.set(payload, HEADER_BYTES);
  return out;
}

/** Reads frames out of a byte stream cut anywhere: what arrived, whole frames out, the rest kept for the next read. */
export class FrameReader {
  #held: Uint8Array = EMPTY;

  /** The whole frames `bytes` completes; throws on a type this relay does not speak (a peer of another version). */
  push(bytes: Uint8Array): Frame[] {
    let buffer = this.#held.byteLength === 0 ? bytes : concat(this.#held, bytes);
    const frames: Frame[] = [];
    let at = 0;
    while (buffer.byteLength - at >= HEADER_BYTES) {
      const type = buffer[at]!;
      if (!KNOWN.has(type)) throw new Error(`unknown relay frame type 0x${type.toString(16)}`);
      const length = new DataView(buffer.buffer, buffer.byteOffset + at + 1, 4).getUint32(0);
      if (buffer.byteLength - at - HEADER_BYTES < length) break;
      // A copy: the payload outlives this read (it is kept for a slow client), the read's buffer may not.
      frames.push({ type: type as FrameType, payload: buffer.slice(at + HEADER_BYTES, at + HEADER_BYTES + length) });
      at += HEADER_BYTES + length;
    }
    this.#held = at === buffer.byteLength ? EMPTY : buffer.slice(at);
    buffer = EMPTY;
    return frames;
  }

  /** Bytes of an unfinished frame: a stream that ends with some was cut mid-frame. */
  get pending(): number {
    return this.#held.byteLength;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}
