import { Elysia } from "elysia";
import { CHUNK_BYTES, type FileStore, fileObject } from "../batch/files";
import { ApiError, BadRequestError, ConflictError, NotFoundError } from "../errors";
import { routeDoc } from "./api-docs";
import { FileDocs } from "./batch-docs";
import { multipartBoundary, multipartParts } from "./multipart";
import { ownerFilter, principalOf, sees } from "../keys/principal";

/** The purposes an upload may have: foreman keeps files for its Batch API only. */
const UPLOAD_PURPOSES = ["batch"];
/** Longest value of a text field of the upload form. */
const MAX_FIELD_BYTES = 1024;
/** Room for a multipart upload's boundaries, headers and fields around a file of FOREMAN_MAX_FILE bytes. */
export const UPLOAD_OVERHEAD_BYTES = 64 * 1024;

/** A list page's paging fields, as OpenAI's lists carry them. */
export function listPage<T extends { id: string }>(data: T[], limit: number) {
  const page = data.slice(0, limit);
  return {
    object: "list" as const,
    data: page,
    first_id: page[0]?.id ?? null,
    last_id: page.at(-1)?.id ?? null,
    has_more: data.length > limit,
  };
}

/** A `limit` query parameter: an integer from 1 to `max`, `fallback` when absent. */
export function limitParam(value: string | undefined, fallback: number, max: number): number {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > max) throw new BadRequestError(`limit must be an integer from 1 to ${max}`);
  return n;
}

/** What the Files API is limited by, and which batch holds a file. */
export interface FileLimits {
  /** FOREMAN_MAX_FILE: the most bytes one upload may hold. */
  maxFileBytes: number;
  /** FOREMAN_MAX_FILES_BYTES: the most bytes all stored files together may hold. */
  maxFilesBytes: number;
  /** A batch not yet ended that reads or writes the file, or null: such a file cannot be deleted. */
  openBatchUsing: (fileId: string) => { id: string; status: string } | null;
}

/**
 * OpenAI's Files API, for the Batch API's input and output: uploads stream into the database chunk
 * by chunk (never whole in memory), up to FOREMAN_MAX_FILE bytes each and FOREMAN_MAX_FILES_BYTES in
 * all; content streams back the same way. A file a running batch uses is not deleted (409).
 */
export function fileRoutes(files: FileStore, limits: FileLimits) {
  const { maxFileBytes } = limits;
  // Another key's file is answered exactly as one that does not exist.
  const find = (id: string, request: Request) => {
    const file = files.get(id);
    if (!file || !sees(principalOf(request), file.keyId)) throw new NotFoundError(`No such File object: ${id}`);
    return file;
  };
  return new Elysia({ tags: ["files"] })
    .post("/v1/files", ({ request }) => upload(files, request, limits), {
      parse: "none",
      ...routeDoc(
        "Upload a file (OpenAI)",
        `multipart/form-data with \`file\` and \`purpose\` ("batch"). At most FOREMAN_MAX_FILE bytes (${maxFileBytes}); larger is a 413, ` +
          `as is an upload past FOREMAN_MAX_FILES_BYTES (${limits.maxFilesBytes}) for all files together.`,
        FileDocs.upload,
      ),
    })
    .get(
      "/v1/files",
      ({ query, request }) => {
        const limit = limitParam(query.limit, 10_000, 10_000);
        const order = query.order === "asc" ? "asc" : "desc";
        if (query.order !== undefined && query.order !== "asc" && query.order !== "desc") {
          throw new BadRequestError('order must be "asc" or "desc"');
        }
        const keyId = ownerFilter(principalOf(request));
        const rows = files.list({ purpose: query.purpose, after: query.after, limit: limit + 1, order, keyId });
        return listPage(rows.map(fileObject), limit);
      },
      routeDoc("List files (OpenAI)", "Newest first; `purpose`, `after`, `limit`, `order` filter and page.", FileDocs.list),
    )
    .get(
      "/v1/files/:id",
      ({ params, request }) => fileObject(find(params.id, request)),
      routeDoc("A file (OpenAI)", "Its size, name and purpose.", FileDocs.get),
    )
    .get(
      "/v1/files/:id/content",
      ({ params, request }) => {
        const file = find(params.id, request);
        return new Response(files.stream(file.id), { headers: { "content-type": "application/octet-stream" } });
      },
      routeDoc(
        "A file's content (OpenAI)",
        "Streamed. A batch's output and error files can be read while the batch runs: they grow line by line.",
        FileDocs.content,
      ),
    )
    .delete(
      "/v1/files/:id",
      ({ params, request }) => {
        const batch = limits.openBatchUsing(find(params.id, request).id);
        if (batch) {
          throw new ConflictError(
            `File ${params.id} is used by batch ${batch.id} (status ${batch.status}): it can be deleted once the batch has ended (or been cancelled).`,
          );
        }
        if (!files.delete(params.id)) throw new NotFoundError(`No such File object: ${params.id}`);
        return { id: params.id, object: "file", deleted: true };
      },
      routeDoc(
        "Delete a file (OpenAI)",
        "The file and its bytes. The input, output or error file of a batch that has not ended is a 409.",
        FileDocs.delete,
      ),
    );
}

/** Streams a multipart upload into the store; an unfinished upload is removed whatever went wrong. */
async function upload(files: FileStore, request: Request, limits: FileLimits): Promise<Response> {
  const { maxFileBytes } = limits;
  const boundary = multipartBoundary(request.headers.get("content-type"));
  if (!boundary || !request.body) {
    throw new BadRequestError('the upload must be multipart/form-data with a "file" part and a "purpose" field');
  }
  let fileId: string | undefined;
  let filename = "upload.jsonl";
  let purpose: string | undefined;
  try {
    // A chunked upload declares no length: the whole body is bounded as it streams, the file part again below.
    const bound = {
      maxBytes: maxFileBytes + UPLOAD_OVERHEAD_BYTES,
      message: `file too large: the upload is over ${maxFileBytes} bytes, the limit (FOREMAN_MAX_FILE)`,
    };
    for await (const part of multipartParts(request.body, boundary, bound)) {
      if (part.name === "purpose") purpose = await fieldText(part.data);
      else if (part.name === "file") {
        if (fileId) throw new BadRequestError('only one "file" part is allowed');
        filename = part.filename || filename;
        fileId = files.beginUpload("", filename, principalOf(request).keyId).id;
        await storeChunks(files, fileId, part.data, limits);
      }
    }
    if (!fileId) throw new BadRequestError('the upload has no "file" part');
    if (purpose === undefined) throw new BadRequestError('Missing required parameter: "purpose"');
    if (!UPLOAD_PURPOSES.includes(purpose))
      throw new BadRequestError(`purpose must be one of ${UPLOAD_PURPOSES.join(", ")}, not "${purpose}"`);
    const file = files.finishUpload(fileId, purpose);
    fileId = undefined;
    return Response.json(fileObject(file));
  } finally {
    if (fileId) files.delete(fileId);
  }
}

/** A text field's value, bounded. */
async function fieldText(data: AsyncGenerator<Uint8Array>): Promise<string> {
  const pieces: Uint8Array[] = [];
  let size = 0;
  for await (const piece of data) {
    size += piece.length;
    if (size > MAX_FIELD_BYTES) throw new BadRequestError(`a form field may hold at most ${MAX_FIELD_BYTES} bytes`);
    pieces.push(piece);
  }
  return Buffer.concat(pieces).toString("utf8").trim();
}

/**
 * Writes a file part in CHUNK_BYTES rows as it arrives; past FOREMAN_MAX_FILE, or past FOREMAN_MAX_FILES_BYTES
 * with every stored file counted (unfinished uploads and batches' output too), a 413.
 */
async function storeChunks(files: FileStore, id: string, data: AsyncGenerator<Uint8Array>, limits: FileLimits): Promise<void> {
  const { maxFileBytes, maxFilesBytes } = limits;
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let total = 0;
  const flush = () => {
    if (pendingBytes === 0) return;
    const stored = files.storedBytes();
    if (stored + pendingBytes > maxFilesBytes) {
      const written = total - pendingBytes;
      const room = Math.max(0, maxFilesBytes - (stored - written));
      throw new ApiError(
        413,
        `stored files are over their quota: FOREMAN_MAX_FILES_BYTES is ${maxFilesBytes} bytes and ${room} bytes were free for this upload; delete files (DELETE /v1/files/{id}) to make room`,
      );
    }
    files.append(id, Buffer.concat(pending));
    pending = [];
    pendingBytes = 0;
  };
  for await (const piece of data) {
    total += piece.length;
    if (total > maxFileBytes) {
      throw new ApiError(413, `file too large: the limit is ${maxFileBytes} bytes (FOREMAN_MAX_FILE)`);
    }
    // A copy: the parser's buffer is reused.
    pending.push(Uint8Array.prototype.slice.call(piece));
    pendingBytes += piece.length;
    if (pendingBytes >= CHUNK_BYTES) flush();
  }
  flush();
}
