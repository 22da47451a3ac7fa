// The API docs page: reads /openapi.json and renders every operation, grouped by tag, with
// its parameters, request body and answers; schemas are nested lists, a $ref opens on demand.
// Rules: the document only ever reaches the page as text (textContent), never as markup;
// nothing is fetched but /openapi.json; no inline code (the CSP forbids it).

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return el;
}

const METHODS = ["get", "post", "put", "patch", "delete"];

/** Text with `code` spans as <code> elements (still text: each part through textContent). */
function prose(tag, text, cls) {
  return h(tag, { class: cls }, String(text || "").split("`").map((part, i) =>
    (i % 2 ? h("code", { text: part }) : part)));
}
let components = {};

function refName(ref) {
  return ref.split("/").pop();
}

function typeText(schema) {
  if (!schema || typeof schema !== "object") return "any";
  if (schema.$ref) return refName(schema.$ref);
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if ("const" in schema) return JSON.stringify(schema.const);
  const alts = schema.anyOf || schema.oneOf;
  if (alts) return alts.map(typeText).join(" | ");
  if (schema.type === "array") return `${typeText(schema.items)}[]`;
  let text = schema.type || "any";
  if (schema.format) text += ` (${schema.format})`;
  const bounds = [];
  for (const [key, sign] of [["minimum", "≥"], ["maximum", "≤"], ["minLength", "len ≥"], ["maxLength", "len ≤"]]) {
    if (key in schema) bounds.push(`${sign} ${schema[key]}`);
  }
  if (schema.pattern) bounds.push(schema.pattern);
  return bounds.length ? `${text}, ${bounds.join(", ")}` : text;
}

/** The schemas a property's type names, to open below it. */
function nested(schema) {
  if (!schema || typeof schema !== "object") return [];
  if (schema.$ref) return [schema];
  if (schema.type === "array") return nested(schema.items);
  if (schema.type === "object" && schema.additionalProperties) return nested(schema.additionalProperties);
  return (schema.anyOf || schema.oneOf || []).flatMap(nested);
}

/** A $ref as a summary that renders its schema the first time it is opened. */
function refNode(ref) {
  const name = refName(ref);
  const box = h("details", { class: "ref" }, h("summary", { text: name }));
  box.addEventListener("toggle", () => {
    if (box.open && box.children.length === 1) box.append(schemaNode(components[name] || {}));
  });
  return box;
}

function schemaNode(schema) {
  if (schema.$ref) return refNode(schema.$ref);
  const props = schema.properties;
  if (!props) {
    return h("div", {}, h("span", { class: "type", text: typeText(schema) }),
      schema.description ? h("span", { class: "muted", text: ` — ${schema.description}` }) : null,
      nested(schema).map((s) => refNode(s.$ref)));
  }
  const required = new Set(schema.required || []);
  const list = h("ul", { class: "schema" });
  if (schema.description) list.append(h("li", { class: "muted", text: schema.description }));
  for (const [name, prop] of Object.entries(props)) {
    list.append(h("li", {},
      h("code", { text: name }), required.has(name) ? h("span", { class: "req", text: " *" }) : null,
      " ", h("span", { class: "type", text: typeText(prop) }),
      prop.description ? prose("span", ` — ${prop.description}`, "muted") : null,
      nested(prop).map((s) => refNode(s.$ref))));
  }
  if (schema.additionalProperties === false) list.append(h("li", { class: "muted", text: "no other fields" }));
  return list;
}

function content(media) {
  return Object.entries(media || {}).map(([type, { schema }]) =>
    h("div", {}, h("span", { class: "muted", text: type }), schema ? schemaNode(schema) : null));
}

function operation(path, method, op, doc) {
  const secured = (op.security || doc.security || []).length > 0;
  const params = op.parameters || [];
  const body = h("div", { class: "body" },
    op.description ? prose("p", op.description) : null,
    params.length ? [h("h4", { text: "Parameters" }), h("table", {}, params.map((p) => h("tr", {},
      h("td", {}, h("code", { text: p.name }), p.required ? h("span", { class: "req", text: " *" }) : null),
      h("td", { class: "muted", text: p.in }),
      h("td", { class: "type", text: typeText(p.schema) }),
      prose("td", p.description))))] : null,
    op.requestBody ? [h("h4", { text: "Body" }), content(op.requestBody.content)] : null,
    h("h4", { text: "Answers" }),
    h("table", {}, Object.entries(op.responses || {}).map(([status, resp]) => h("tr", {},
      h("td", { class: "status", text: status }),
      h("td", {}, prose("div", resp.description), content(resp.content))))));
  return h("details", { class: "op", id: op.operationId },
    h("summary", {}, h("span", { class: `method ${method}`, text: method.toUpperCase() }),
      h("span", { class: "path", text: path }), h("span", { text: op.summary || "" }),
      secured ? h("span", { class: "lock", text: "token" }) : null),
    body);
}

function render(doc) {
  components = (doc.components && doc.components.schemas) || {};
  document.getElementById("title").textContent = `${doc.info.title} API ${doc.info.version}`;
  document.getElementById("intro").replaceChildren(prose("span", doc.info.description));
  const byTag = new Map((doc.tags || []).map((t) => [t.name, []]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, op, doc));
    }
  }
  document.getElementById("toc").replaceChildren(
    ...[...byTag.keys()].map((tag) => h("a", { href: `#tag-${tag}`, text: tag })),
    h("a", { href: "#schemas", text: "schemas" }));
  const sections = [...byTag.entries()].map(([tag, ops]) =>
    h("section", {}, h("h2", { id: `tag-${tag}`, text: tag }), ops));
  const schemas = h("section", {}, h("h2", { id: "schemas", text: "schemas" }),
    Object.keys(components).map((name) => refNode(`#/components/schemas/${name}`)));
  document.getElementById("ops").replaceChildren(...sections, schemas);
}

async function main() {
  const ops = document.getElementById("ops");
  try {
    const resp = await fetch("/openapi.json");
    if (!resp.ok) throw new Error(`GET /openapi.json: ${resp.status}`);
    render(await resp.json());
  } catch (err) {
    ops.replaceChildren(h("p", { class: "req", text: String(err) }));
  }
}

main();
