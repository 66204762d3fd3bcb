// Validates the event contract and events against it (used by scripts/check-asyncapi.sh).
//
//   node validate.mjs docs/asyncapi.json                    # the document only
//   node validate.mjs docs/asyncapi.json events.jsonl ...   # and every line of each file
//
// The document: against the official AsyncAPI 3.0.0 JSON Schema (@asyncapi/specs), every local
// "$ref" must resolve, and every message example must match its own payload and header schemas.
// Events: each line must be one JSON object whose `type` names a message of the document, and
// match that message's payload schema; the rules the document states in words are checked too
// (occurred_at equals paid_at/refunded_at, line amounts, totals). Prints a JSON summary on
// stdout; exits 1 on any mismatch, naming file, line and the failing rule.

import { readFileSync } from "node:fs";
import Ajv from "ajv";
import addFormats from "ajv-formats";
import specs from "@asyncapi/specs";

const [docPath, ...eventFiles] = process.argv.slice(2);
if (!docPath) {
  console.error("usage: node validate.mjs <asyncapi.json> [events.jsonl ...]");
  process.exit(2);
}

const failures = [];
const fail = (where, message) => failures.push(`${where}: ${message}`);
const describe = (errors) =>
  errors.map((e) => `${e.instancePath || "(root)"} ${e.message}${e.params ? " " + JSON.stringify(e.params) : ""}`).join("; ");

const doc = JSON.parse(readFileSync(docPath, "utf8"));

// --- 1. the document against the official schema -------------------------------------------
const version = doc.asyncapi;
const official = specs.schemas[version];
if (!official || !version.startsWith("3.")) {
  fail(docPath, `asyncapi version ${JSON.stringify(version)} is not an AsyncAPI 3 version known to @asyncapi/specs`);
} else {
  // The official schema embeds the draft-07 meta-schema itself, so Ajv must not add its own.
  const ajv = new Ajv({ strict: false, allErrors: true, meta: false, validateSchema: false });
  addFormats(ajv);
  const validate = ajv.compile(official);
  if (!validate(doc)) fail(docPath, `not a valid AsyncAPI ${version} document: ${describe(validate.errors)}`);
}

// --- 2. local references resolve ------------------------------------------------------------
const resolve = (pointer) =>
  pointer
    .slice(2)
    .split("/")
    .map((part) => part.replace(/~1/g, "/").replace(/~0/g, "~"))
    .reduce((node, key) => (node === undefined ? undefined : node[key]), doc);
(function walk(node, path) {
  if (Array.isArray(node)) node.forEach((item, i) => walk(item, `${path}/${i}`));
  else if (node && typeof node === "object") {
    for (const [key, value] of Object.entries(node)) {
      if (key === "$ref" && typeof value === "string") {
        if (!value.startsWith("#/")) fail(docPath, `${path}: reference ${value} leaves the document`);
        else if (resolve(value) === undefined) fail(docPath, `${path}: reference ${value} does not resolve`);
      } else walk(value, `${path}/${key}`);
    }
  }
})(doc, "#");

// --- 3. payload schemas, compiled as one JSON Schema ----------------------------------------
// components.schemas become `definitions` of one schema, so their references resolve inside it.
const schemaDoc = JSON.parse(
  JSON.stringify({ $id: "urn:ecommerce:asyncapi", definitions: doc.components?.schemas ?? {} }).replaceAll(
    '"#/components/schemas/',
    '"urn:ecommerce:asyncapi#/definitions/',
  ),
);
const payloadAjv = new Ajv({ strict: false, allErrors: true });
addFormats(payloadAjv);
payloadAjv.addSchema(schemaDoc);
const schemaFor = (ref, where) => {
  const name = ref?.startsWith("#/components/schemas/") ? ref.slice("#/components/schemas/".length) : undefined;
  const validate = name && payloadAjv.getSchema(`urn:ecommerce:asyncapi#/definitions/${name}`);
  if (!validate) fail(docPath, `${where}: expected a reference to #/components/schemas/…, got ${ref}`);
  return validate || null;
};

const messages = new Map(); // message name (the envelope's `type`) -> { payload, headers, key }
for (const [key, message] of Object.entries(doc.components?.messages ?? {})) {
  const entry = {
    key,
    payload: schemaFor(message.payload?.$ref, `message ${key} payload`),
    headers: message.headers ? schemaFor(message.headers.$ref, `message ${key} headers`) : null,
  };
  messages.set(message.name, entry);
  for (const [i, example] of (message.examples ?? []).entries()) {
    const where = `${docPath}: message ${key} example ${i}`;
    if (entry.payload && !entry.payload(example.payload)) fail(where, `payload: ${describe(entry.payload.errors)}`);
    if (entry.headers && example.headers && !entry.headers(example.headers)) fail(where, `headers: ${describe(entry.headers.errors)}`);
    if (example.payload?.type !== message.name) fail(where, `payload type ${example.payload?.type} is not ${message.name}`);
    if (example.headers && example.headers["Nats-Msg-Id"] !== example.payload?.id) fail(where, "Nats-Msg-Id differs from the event id");
    checkRules(example.payload, where);
  }
}

// The rules the document states in words.
function checkRules(event, where) {
  const data = event?.data;
  if (!data || !Array.isArray(data.items)) return;
  const at = event.type === "order.paid" ? data.paid_at : data.refunded_at;
  if (event.occurred_at !== at) fail(where, `occurred_at ${event.occurred_at} differs from the data's time ${at}`);
  let total = 0;
  for (const [i, line] of data.items.entries()) {
    if (line.amount !== line.unit_price * line.quantity) fail(where, `items/${i}: amount is not unit_price × quantity`);
    total += line.amount;
  }
  if (data.total_amount !== total) fail(where, `total_amount ${data.total_amount} is not the sum of the lines (${total})`);
  const charged = event.type === "order.paid" ? data.paid_amount : data.refunded_amount;
  if (charged !== data.total_amount - data.discount_amount) fail(where, "paid/refunded amount is not total_amount − discount_amount");
  if (data.discount_amount > 0 && data.user_coupon_id === null) fail(where, "a discount without a user coupon");
}

// --- 4. events ------------------------------------------------------------------------------
const counts = {};
const ids = new Set();
let duplicates = 0;
for (const file of eventFiles) {
  const lines = readFileSync(file, "utf8").split("\n");
  if (lines.at(-1) === "") lines.pop();
  else if (lines.length > 0) fail(file, "the last line is not terminated by a newline");
  lines.forEach((line, i) => {
    const where = `${file}:${i + 1}`;
    let event;
    try {
      event = JSON.parse(line);
    } catch (err) {
      fail(where, `not JSON: ${err.message}`);
      return;
    }
    const message = messages.get(event?.type);
    if (!message) {
      fail(where, `type ${JSON.stringify(event?.type)} is not a message of the document`);
      return;
    }
    if (message.payload && !message.payload(event)) fail(where, `${event.type}: ${describe(message.payload.errors)}`);
    checkRules(event, where);
    counts[event.type] = (counts[event.type] ?? 0) + 1;
    if (ids.has(event.id)) duplicates += 1;
    ids.add(event.id);
  });
}

console.log(JSON.stringify({ document: docPath, asyncapi: version, files: eventFiles.length, events: counts, duplicate_ids: duplicates, failures: failures.length }));
if (failures.length > 0) {
  for (const failure of failures) console.error(`FAIL ${failure}`);
  process.exit(1);
}
