// The one place a job's prompt is read for the dashboard: the page shows its first words, and nothing
// else of the request leaves the database. (When keys come, the preview is withheld here for a watcher
// that may not see it.)

/** How many characters of a prompt the page shows. */
export const PREVIEW_CHARS = 60;

/**
 * Where a request keeps its prompt, by API: Ollama's generate and OpenAI's completions `prompt`, OpenAI's
 * Responses and embeddings `input`, every chat API its last message's `content`. SQL, so that only the
 * head of the value (1,000 characters) leaves SQLite, however large the request: the first path
 * present, as JSON (a string comes back quoted, so a prompt is never mistaken for a list).
 */
export const PROMPT_HEAD_SQL = `substr(coalesce(request -> '$.prompt', request -> '$.input',
  request -> '$.messages[#-1].content'), 1, 1000)`;

/** A JSON string literal, possibly cut off at its end. */
const STRING = /"((?:[^"\\]|\\.)*)("?)/y;
/** A string under "text" or "content": a content part's or a message's text. */
const TEXT_FIELD = /"(?:text|content)"\s*:\s*"((?:[^"\\]|\\.)*)/g;

/**
 * The first words of a prompt from the head {@link PROMPT_HEAD_SQL} read: a string's text, or the text of a
 * list of parts or messages (their "text" and "content" strings), whitespace folded, control characters
 * dropped, at most `max` characters cut at a word with "…". Plain text: the page puts it in a text node.
 */
export function promptPreview(head: string | null, max = PREVIEW_CHARS): string {
  if (!head) return "";
  let text = "";
  STRING.lastIndex = 0;
  const string = head.startsWith('"') ? STRING.exec(head) : null;
  if (string) text = unescape(string[1]!);
  else if (head.startsWith("[") || head.startsWith("{")) {
    const parts = [...head.matchAll(TEXT_FIELD)].map((match) => unescape(match[1]!));
    // A list of plain strings (OpenAI's prompt or input as several texts).
    if (parts.length === 0 && head.startsWith('["')) {
      STRING.lastIndex = 1;
      const first = STRING.exec(head);
      if (first) parts.push(unescape(first[1]!));
    }
    text = parts.join(" ");
  }
  text = text
    .replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  if (text.length <= max) return text;
  const cut = text.slice(0, max);
  const space = cut.lastIndexOf(" ");
  return `${(space > max * 0.6 ? cut.slice(0, space) : cut).trimEnd()}…`;
}

/** A JSON string literal's contents decoded; a cut-off escape at its end is dropped. */
function unescape(body: string): string {
  try {
    return JSON.parse(`"${body.replace(/\\(u[0-9a-fA-F]{0,3})?$/, "")}"`) as string;
  } catch {
    return body;
  }
}
