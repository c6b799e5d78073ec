/// <reference lib="dom" />
// Elements built from parts: every string becomes a text node, every value an attribute, so nothing from
// the server is ever parsed as HTML (model names, prompts and errors are user input).

export type Child = Node | string | null | undefined | false;

/** An element with attributes and children; strings become text nodes. */
export function h(tag: string, attrs: Record<string, string> = {}, ...children: Child[]): HTMLElement {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
  for (const child of children) if (child) element.append(child);
  return element;
}

/** An SVG element, the same way. */
export function svg(tag: string, attrs: Record<string, string | number>, ...children: Child[]): SVGElement {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  for (const child of children) if (child) element.append(child);
  return element;
}
