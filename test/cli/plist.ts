// A strict reader for XML property lists, enough to check what `foreman service install` writes for
// launchd without plutil: well-formed XML (one root, matched tags, known entities, nothing stray), then
// the plist grammar (dict of key/value pairs, array, string, integer, true, false).

/** A plist value. */
export type PlistValue = string | number | boolean | PlistValue[] | { [key: string]: PlistValue };

interface XmlElement {
  name: string;
  attributes: Record<string, string>;
  children: Array<XmlElement | string>;
}

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };
const NAME = /[A-Za-z_][\w.-]*/y;

class XmlReader {
  private at = 0;
  constructor(private readonly text: string) {}

  fail(message: string): never {
    const line = this.text.slice(0, this.at).split("\n").length;
    throw new Error(`plist line ${line}: ${message}`);
  }

  document(): XmlElement {
    if (this.text.startsWith("<?xml")) this.skipPast("?>");
    this.misc();
    if (this.text.startsWith("<!DOCTYPE", this.at)) this.skipPast(">");
    this.misc();
    const root = this.element();
    this.misc();
    if (this.at !== this.text.length) this.fail("content after the root element");
    return root;
  }

  private skipPast(end: string): void {
    const index = this.text.indexOf(end, this.at);
    if (index < 0) this.fail(`missing "${end}"`);
    this.at = index + end.length;
  }

  /** Whitespace and comments between top-level parts. */
  private misc(): void {
    for (;;) {
      while (/\s/.test(this.text[this.at] ?? "")) this.at++;
      if (!this.text.startsWith("<!--", this.at)) return;
      this.skipPast("-->");
    }
  }

  private name(): string {
    NAME.lastIndex = this.at;
    const match = NAME.exec(this.text);
    if (!match) this.fail("expected a name");
    this.at += match[0].length;
    return match[0];
  }

  private element(): XmlElement {
    if (this.text[this.at] !== "<") this.fail("expected an element");
    this.at++;
    const name = this.name();
    const attributes: Record<string, string> = {};
    for (;;) {
      const space = /^\s*/.exec(this.text.slice(this.at))![0].length;
      this.at += space;
      if (this.text.startsWith("/>", this.at)) {
        this.at += 2;
        return { name, attributes, children: [] };
      }
      if (this.text[this.at] === ">") {
        this.at++;
        break;
      }
      if (!space) this.fail(`expected whitespace, ">" or "/>" in <${name}>`);
      const attribute = this.name();
      if (this.text[this.at] !== "=" || this.text[this.at + 1] !== '"') this.fail(`attribute ${attribute} needs ="value"`);
      this.at += 2;
      const end = this.text.indexOf('"', this.at);
      if (end < 0) this.fail("unterminated attribute");
      attributes[attribute] = this.decode(this.text.slice(this.at, end));
      this.at = end + 1;
    }
    const children: Array<XmlElement | string> = [];
    for (;;) {
      if (this.at >= this.text.length) this.fail(`<${name}> is not closed`);
      if (this.text.startsWith("</", this.at)) {
        this.at += 2;
        const closing = this.name();
        if (closing !== name) this.fail(`</${closing}> closes <${name}>`);
        if (this.text[this.at] !== ">") this.fail(`expected ">" after </${closing}`);
        this.at++;
        return { name, attributes, children };
      }
      if (this.text.startsWith("<!--", this.at)) this.skipPast("-->");
      else if (this.text[this.at] === "<") children.push(this.element());
      else {
        const end = this.text.indexOf("<", this.at);
        const raw = this.text.slice(this.at, end < 0 ? undefined : end);
        children.push(this.decode(raw));
        this.at += raw.length;
      }
    }
  }

  private decode(raw: string): string {
    if (/[\x00-\x08\x0b\x0c\x0e-\x1f]/.test(raw)) this.fail("a control character");
    if (raw.includes(">") && raw.includes("]]>")) this.fail('"]]>" in text');
    return raw.replace(/&([^;]*);?/g, (whole, entity: string) => {
      const numeric = /^#(x[0-9a-f]+|\d+)$/i.exec(entity);
      if (numeric) return String.fromCodePoint(Number(numeric[1]!.startsWith("x") ? `0${numeric[1]}` : numeric[1]));
      if (!whole.endsWith(";") || !(entity in ENTITIES)) this.fail(`bad entity "${whole}"`);
      return ENTITIES[entity]!;
    });
  }
}

function elements(node: XmlElement): XmlElement[] {
  for (const child of node.children) {
    if (typeof child === "string" && child.trim()) throw new Error(`plist: text "${child.trim()}" inside <${node.name}>`);
  }
  return node.children.filter((child): child is XmlElement => typeof child !== "string");
}

function text(node: XmlElement): string {
  if (node.children.some((child) => typeof child !== "string")) throw new Error(`plist: <${node.name}> holds elements`);
  return node.children.join("");
}

function value(node: XmlElement): PlistValue {
  switch (node.name) {
    case "string":
      return text(node);
    case "integer": {
      const raw = text(node).trim();
      if (!/^-?\d+$/.test(raw)) throw new Error(`plist: <integer>${raw}</integer>`);
      return Number(raw);
    }
    case "true":
    case "false":
      if (node.children.length) throw new Error(`plist: <${node.name}> must be empty`);
      return node.name === "true";
    case "array":
      return elements(node).map(value);
    case "dict": {
      const items = elements(node);
      const dict: Record<string, PlistValue> = {};
      for (let i = 0; i < items.length; i += 2) {
        const key = items[i]!;
        const item = items[i + 1];
        if (key.name !== "key") throw new Error(`plist: <${key.name}> where a <key> belongs`);
        if (!item) throw new Error(`plist: <key>${text(key)}</key> has no value`);
        if (text(key) in dict) throw new Error(`plist: key ${text(key)} twice`);
        dict[text(key)] = value(item);
      }
      return dict;
    }
    default:
      throw new Error(`plist: unknown element <${node.name}>`);
  }
}

/** Parses an XML property list; throws, naming the line, on anything not well-formed or not a plist. */
export function parsePlist(xml: string): PlistValue {
  const root = new XmlReader(xml).document();
  if (root.name !== "plist" || root.attributes.version !== "1.0")
    throw new Error('plist: the root must be <plist version="1.0">');
  const [only, ...rest] = elements(root);
  if (!only || rest.length) throw new Error("plist: <plist> must hold exactly one value");
  return value(only);
}
