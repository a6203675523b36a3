// Small helpers for building the page's tables and messages from data: text always goes in as text, never markup.

export function byId<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

type Child = Node | string;

export function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const made = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, value);
  made.append(...children);
  return made;
}

/** Replaces a table body's rows; one row saying `empty` when there are none. */
export function fillRows(body: HTMLTableSectionElement, rows: HTMLTableRowElement[], empty: string): void {
  if (rows.length > 0) {
    body.replaceChildren(...rows);
    return;
  }
  const columns = body.closest("table")?.querySelectorAll("thead th").length ?? 1;
  body.replaceChildren(element("tr", {}, element("td", { colspan: String(columns), class: "empty" }, empty)));
}

export function row(...cells: Child[]): HTMLTableRowElement {
  return element("tr", {}, ...cells.map((cell) => element("td", {}, cell)));
}

/** Space- or comma-separated words from a text field, without empties. */
export function words(text: string): string[] {
  return text.split(/[\s,]+/).filter((word) => word !== "");
}
