// How a streamed answer reaches a client, read by read: a raw socket (node:net) sends one request and
// decodes the chunked body itself, so each `data` event is one read of the socket, as a client such as
// Genkit's, which parses each read as one record, sees it. Shared by the record-boundary test and bench.
import { connect } from "node:net";

/** One streamed answer as its reads brought it. */
export interface StreamReads {
  status: number;
  /** The decoded body, exactly. */
  body: string;
  /** For each socket read that completed at least one record: how many it completed. */
  recordsPerRead: number[];
  /** For each HTTP chunk of a chunked body (one write of the server's): how many record ends it held. */
  recordsPerChunk: number[];
}

/**
 * POSTs `body` to `url` + `path` over a fresh socket (loopback Host, Connection: close) and records how
 * many whole records, ending with `recordEnd` ("\n" for NDJSON, "\n\n" for SSE), each read completed.
 */
export function streamReads(url: string, path: string, body: string, recordEnd: string): Promise<StreamReads> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port) });
    const request = [
      `POST ${path} HTTP/1.1`,
      `Host: 127.0.0.1:${port}`,
      "Content-Type: application/json",
      `Content-Length: ${Buffer.byteLength(body)}`,
      "Connection: close",
      "",
      body,
    ].join("\r\n");
    socket.on("connect", () => socket.write(request));
    let raw = Buffer.alloc(0);
    let status = 0;
    let chunked = false;
    let decoded = "";
    const recordsPerRead: number[] = [];
    const recordsPerChunk: number[] = [];
    const decoder = new TextDecoder();
    /** Takes what the chunked framing lets through out of `raw` into `decoded`; false once the last chunk came. */
    const decode = (): boolean => {
      for (;;) {
        if (!chunked) {
          decoded += decoder.decode(raw, { stream: true });
          raw = Buffer.alloc(0);
          return true;
        }
        const lineEnd = raw.indexOf("\r\n");
        if (lineEnd < 0) return true;
        const size = parseInt(raw.subarray(0, lineEnd).toString("latin1"), 16);
        if (size === 0) return false;
        if (raw.length < lineEnd + 2 + size + 2) return true;
        const chunk = raw.subarray(lineEnd + 2, lineEnd + 2 + size).toString("latin1");
        recordsPerChunk.push(chunk.split(recordEnd).length - 1);
        decoded += decoder.decode(raw.subarray(lineEnd + 2, lineEnd + 2 + size), { stream: true });
        raw = raw.subarray(lineEnd + 2 + size + 2);
      }
    };
    let scanned = 0;
    /** Counts the record ends that reached `decoded` since the last call. */
    const countRecords = () => {
      let count = 0;
      for (let at = decoded.indexOf(recordEnd, scanned); at >= 0; at = decoded.indexOf(recordEnd, scanned)) {
        count++;
        scanned = at + recordEnd.length;
      }
      return count;
    };
    socket.on("data", (bytes: Buffer) => {
      raw = Buffer.concat([raw, bytes]);
      if (!status) {
        const headEnd = raw.indexOf("\r\n\r\n");
        if (headEnd < 0) return;
        const head = raw.subarray(0, headEnd).toString("latin1");
        status = Number(head.split(" ")[1]);
        chunked = /\r\ntransfer-encoding:\s*chunked/i.test(head);
        raw = raw.subarray(headEnd + 4);
      }
      const more = decode();
      const completed = countRecords();
      if (completed > 0) recordsPerRead.push(completed);
      if (!more) socket.end();
    });
    socket.on("error", reject);
    socket.on("close", () => resolve({ status, body: decoded, recordsPerRead, recordsPerChunk }));
  });
}

/** The share of reads (of those that completed a record), or of HTTP chunks, that held more than one record. */
export function mergedShare(
  streams: readonly StreamReads[],
  by: "read" | "chunk" = "read",
): { reads: number; merged: number; share: number } {
  const counts = streams.flatMap((stream) => (by === "read" ? stream.recordsPerRead : stream.recordsPerChunk));
  const merged = counts.filter((count) => count > 1).length;
  return { reads: counts.length, merged, share: counts.length ? merged / counts.length : 0 };
}
