import { Elysia } from "elysia";
import { CHUNK_BYTES, type FileStore, fileObject } from "../batch/files";
import { ApiError, BadRequestError, NotFoundError } from "../errors";
import { routeDoc } from "./api-docs";
import { FileDocs } from "./batch-docs";
import { multipartBoundary, multipartParts } from "./multipart";

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

/**
 * OpenAI's Files API, for the Batch API's input and output: uploads stream into the database chunk
 * by chunk (never whole in memory), up to FOREMAN_MAX_FILE bytes; content streams back the same way.
 */
export function fileRoutes(files: FileStore, maxFileBytes: number) {
  const find = (id: string) => {
    const file = files.get(id);
    if (!file) throw new NotFoundError(`No such File object: ${id}`);
    return file;
  };
  return new Elysia({ tags: ["files"] })
    .post("/v1/files", ({ request }) => upload(files, request, maxFileBytes), {
      parse: "none",
      ...routeDoc(
        "Upload a file (OpenAI)",
        `multipart/form-data with \`file\` and \`purpose\` ("batch"). At most FOREMAN_MAX_FILE bytes (${maxFileBytes}); larger is a 413.`,
        FileDocs.upload,
      ),
    })
    .get(
      "/v1/files",
      ({ query }) => {
        const limit = limitParam(query.limit, 10_000, 10_000);
        const order = query.order === "asc" ? "asc" : "desc";
        if (query.order !== undefined && query.order !== "asc" && query.order !== "desc") {
          throw new BadRequestError('order must be "asc" or "desc"');
        }
        const rows = files.list({ purpose: query.purpose, after: query.after, limit: limit + 1, order });
        return listPage(rows.map(fileObject), limit);
      },
      routeDoc("List files (OpenAI)", "Newest first; `purpose`, `after`, `limit`, `order` filter and page.", FileDocs.list),
    )
    .get(
      "/v1/files/:id",
      ({ params }) => fileObject(find(params.id)),
      routeDoc("A file (OpenAI)", "Its size, name and purpose.", FileDocs.get),
    )
    .get(
      "/v1/files/:id/content",
      ({ params }) => {
        const file = find(params.id);
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
      ({ params }) => {
        if (!files.delete(find(params.id).id)) throw new NotFoundError(`No such File object: ${params.id}`);
        return { id: params.id, object: "file", deleted: true };
      },
      routeDoc("Delete a file (OpenAI)", "The file and its bytes.", FileDocs.delete),
    );
}

/** Streams a multipart upload into the store; an unfinished upload is removed whatever went wrong. */
async function upload(files: FileStore, request: Request, maxFileBytes: number): Promise<Response> {
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
        fileId = files.beginUpload("", filename).id;
        await storeChunks(files, fileId, part.data, maxFileBytes);
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

/** Writes a file part in CHUNK_BYTES rows as it arrives; past the limit, a 413. */
async function storeChunks(files: FileStore, id: string, data: AsyncGenerator<Uint8Array>, maxFileBytes: number): Promise<void> {
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let total = 0;
  const flush = () => {
    if (pendingBytes === 0) return;
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
