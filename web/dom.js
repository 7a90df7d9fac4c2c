// Building DOM from the endpoint's data without ever parsing it as HTML: every text goes
// in through textContent or a Text node, every attribute through setAttribute. A
// deployment named `<img src=x onerror=alert(1)>` is shown as those characters.

import { NONE } from "./format.js";

/**
 * el("td", {className: "num", "data-key": "x"}, "text", otherNode)
 * Strings among the children become Text nodes. Event-handler attributes are refused.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (/^on/i.test(name) || name === "style") throw new Error(`el(): ${name} is not allowed`);
    if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child);
  }
  return node;
}

/**
 * The raw JSON value as the data-value attribute holds it: a number as JavaScript
 * writes it (97.77, 1523, -0.5), a string as it is, null as "null".
 */
export function rawValue(value) {
  if (value === null || value === undefined) return "null";
  return String(value);
}

/** The text shown for "no value" (null): a dash, read as "no value". */
export function noneNode() {
  const wrapper = document.createDocumentFragment();
  wrapper.append(
    el("span", { "aria-hidden": "true" }, NONE),
    el("span", { className: "visually-hidden" }, "no value"),
  );
  return wrapper;
}

/**
 * An element showing one value of the JSON: data-key names where it is (a dotted path,
 * array items by index: "current_period.by_message_type.0.count"), data-value holds the
 * raw value. A key the answer lacks gets data-missing as well.
 */
export function datum(tag, key, value, text, attrs = {}) {
  const node = el(tag, {
    ...attrs,
    "data-key": key,
    "data-value": rawValue(value),
    "data-missing": value === undefined ? "true" : null,
  });
  if (text === "" || text === null || text === undefined || text === NONE) node.append(noneNode());
  else node.append(text);
  return node;
}

/** Look up a dotted path ("previous_period_more.total_provider_cost") in an object. */
export function lookup(object, path) {
  let current = object;
  for (const part of path.split(".")) {
    if (current === null || current === undefined || typeof current !== "object") return undefined;
    if (!Object.prototype.hasOwnProperty.call(current, part)) return undefined;
    current = current[part];
  }
  return current;
}
