import type { ApiFamily } from "./adapter";

/**
 * OpenAI's `type` for a status (R:openai/openai.go:225-237), plus foreman's own refusals of what the client
 * sent: too large (413) and in conflict with the state of a batch or file (409) are the client's to fix.
 */
function openaiErrorType(status: number): string {
  if (status === 400 || status === 409 || status === 413) return "invalid_request_error";
  if (status === 404) return "not_found_error";
  if (status === 401) return "authentication_error";
  return "api_error";
}

/** Anthropic's `error.type` for a status (R:anthropic/anthropic.go:26-62). */
function anthropicErrorType(status: number): string {
  switch (status) {
    case 400:
    case 413:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    case 503:
    case 529:
      return "overloaded_error";
    default:
      return "api_error";
  }
}

/** The error body each API sends, for a status and message. */
export function errorBody(api: ApiFamily, status: number, message: string): unknown {
  switch (api) {
    case "ollama":
      return { error: message };
    case "openai":
      return { error: { message, type: openaiErrorType(status), param: null, code: null } };
    case "anthropic":
      return { type: "error", error: { type: anthropicErrorType(status), message } };
  }
}

/** An error answer in the API's shape: `application/json; charset=utf-8`, no trailing newline. */
export function errorResponse(api: ApiFamily, status: number, message: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(errorBody(api, status, message)), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/**
 * The error text of any API's error body (Ollama's `{"error": "..."}`, OpenAI's `{"error": {"message"}}`,
 * Anthropic's `{"type": "error", "error": {"message"}}`), or undefined when it is none of them.
 */
export function errorText(body: unknown): string | undefined {
  if (!body || typeof body !== "object") return undefined;
  const error = (body as { error?: unknown }).error;
  if (typeof error === "string") return error;
  if (error && typeof error === "object" && typeof (error as { message?: unknown }).message === "string") {
    return (error as { message: string }).message;
  }
  return undefined;
}

/** Which API a request path belongs to, so a failure before any route answers in that API's shape. */
export function apiForPath(path: string): ApiFamily {
  if (path === "/v1/messages" || path.startsWith("/v1/messages/")) return "anthropic";
  if (path.startsWith("/v1/")) return "openai";
  return "ollama";
}
