// Building the page: elements from plain data (text always goes in as text
// nodes, never as markup), badges, time formatting, and the filter form and
// pager the list pages share.

import { query } from "./api.js";

/** An element with attributes, listeners (`on*`) and children. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** A status or liveness badge; its class picks the colour, its text says it. */
export function badge(value) {
  return h("span", { class: `badge ${value}` }, String(value).replace("_", " "));
}

/** How long ago `iso` was, as "12 s ago" (or "" for no time). */
export function ago(iso, now = Date.now()) {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return "";
  const seconds = Math.max(0, Math.round((now - at) / 1000));
  if (seconds < 120) return `${seconds} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

/** A time cell: the RFC 3339 text in a <time>, with its age as the title. */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "never");
  return h("time", { datetime: iso, title: ago(iso) }, iso.replace("T", " ").replace(/\.\d+Z$/, "Z"));
}

/** An owner as the contract spells it: a user id or a guest scope. */
export function owner(value) {
  if (!value) return h("span", { class: "muted" }, "none");
  if (value.user_id !== null && value.user_id !== undefined) return `user ${value.user_id}`;
  return `guest ${value.guest_scope}`;
}

/** A labelled field of a filter form. */
export function field(id, label, control) {
  control.id = id;
  control.name = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

/** A select of `options` (values), with "any" first. */
export function choice(options, selected) {
  return h("select", {},
    h("option", { value: "" }, "any"),
    options.map((value) => h("option", { value, selected: value === selected }, value)));
}

/** A table: head labels and rows of cells; `wide` columns hide in narrow windows. */
export function table(caption, columns, rows) {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.wide ? "wide" : null }, c.label)));
  const body = rows.map((cells) => h("tr", {}, cells.map((cell, at) =>
    h("td", { class: [columns[at].cls, columns[at].wide ? "wide" : null].filter(Boolean).join(" ") || null }, cell))));
  return h("div", { class: "table-wrap" },
    h("table", {}, h("caption", { class: "muted" }, caption), h("thead", {}, head), h("tbody", {}, body)));
}

/**
 * The filter form of a list page at `path` (#/runs, #/workers): submitting
 * it opens the first page of the non-empty filters.
 */
export function filterForm(label, path, fields) {
  const form = h("form", { class: "filters", role: "search", "aria-label": label },
    fields, h("button", { type: "submit" }, "Apply"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = {};
    for (const element of form.elements) if (element.name && element.value.trim()) chosen[element.name] = element.value.trim();
    location.hash = `${path}${query(chosen)}`;
  });
  return form;
}

/** A text input of a filter form, filled from the page's `params`. */
export function textFilter(params, name, label) {
  return field(name, label, h("input", { type: "text", value: params.get(name) || "", autocomplete: "off" }));
}

/** The filters of a list page's `params` and the cursor of its page. */
export function listState(params) {
  return {
    filter: Object.fromEntries([...params].filter(([name]) => name !== "cursor")),
    cursor: params.get("cursor"),
  };
}

/** "First page" (on a later page) and "Next page" (when there is one). */
export function pagerLinks(path, { filter, cursor }, next) {
  return [
    cursor ? h("a", { href: `${path}${query(filter)}` }, "First page") : "",
    next ? h("a", { href: `${path}${query({ ...filter, cursor: next })}` }, "Next page") : "",
  ];
}

/**
 * Replaces `container`'s children, keeping keyboard focus on the same link
 * or control (matched by `href` or `id`) so a refresh never throws a
 * keyboard user back to the top of the page.
 */
export function refill(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.getAttribute("href") || active.id : null;
  container.replaceChildren(...children);
  if (!key) return;
  const again = [...container.querySelectorAll("[href], [id]")].find((e) => (e.getAttribute("href") || e.id) === key);
  if (again) again.focus();
}
