#!/usr/bin/env node
/**
 * Writes `src/protocol.generated.ts`: the TypeScript types of the wire protocol, generated from
 * the JSON Schema the server serves at `GET /schema/protocol.json`, so that the SDK's types
 * cannot drift from the server's (`test/protocol-schema.test.ts` fails when they do).
 *
 *     npm run gen:protocol                      # starts target/release/wirehub (or $WIREHUB_BIN)
 *     node scripts/gen-protocol.mjs --url http://127.0.0.1:8080/schema/protocol.json
 *     node scripts/gen-protocol.mjs --file protocol.json
 *     node scripts/gen-protocol.mjs --check     # exits 1 when the committed file differs
 *
 * The generator knows JSON Schema, not wirehub: every schema at the document's top level
 * (`client`, `server`, and whatever the schema gains) becomes a type named after its `title`
 * (or its key), every entry of `$defs` / `definitions` a type of that name. A `oneOf` / `anyOf`
 * whose members are objects told apart by a constant `type` property (a tagged union) becomes
 * one interface per member, named after the tag and the union (`welcome` in `ServerMessage`:
 * `WelcomeServerMessage`), and the union of them; for each tagged union a table of its
 * members' fields and their kinds (`serverMessageFields`) lets the SDK check a received frame
 * against the schema at run time. Descriptions become doc comments.
 *
 * One deliberate liberty: an optional property whose schema also allows `null` is written as
 * optional without `| null`, because the server leaves such fields out instead of sending
 * `null` (serde's `skip_serializing_if`), and the SDK's parser refuses `null` there.
 *
 * No dependencies: Node 20's standard library only.
 */

import { spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const HEADER = `/**
 * The wire protocol's types, generated from the server's JSON Schema (\`GET /schema/protocol.json\`)
 * by \`scripts/gen-protocol.mjs\`. Do not edit: run \`npm run gen:protocol\` after the schema
 * changed. \`src/protocol.ts\` builds the SDK's protocol types on these.
 */
`;

/** The generated module's text for a schema document. */
export function generate(document) {
  const out = new Emitter();
  const roots = [];
  if (isSchema(document)) {
    roots.push([typeName(document.title ?? "Protocol"), document]);
  } else {
    // A document of schemas, possibly grouped (`{"http": {"publish_request": …}}`).
    const walk = (object) => {
      for (const [key, value] of Object.entries(object)) {
        if (isSchema(value)) roots.push([typeName(value.title ?? key), value]);
        else if (value !== null && typeof value === "object" && !Array.isArray(value)) walk(value);
      }
    };
    walk(document);
  }
  const rootNames = new Set();
  for (const [name] of roots) {
    if (rootNames.has(name)) throw new Error(`two schemas are both named ${name}`);
    rootNames.add(name);
  }
  const defs = new Map();
  const collect = (schema) => {
    for (const bag of [schema.$defs, schema.definitions]) {
      if (bag === undefined) continue;
      for (const [name, def] of Object.entries(bag)) {
        const previous = defs.get(name);
        if (previous !== undefined && JSON.stringify(previous) !== JSON.stringify(def)) {
          throw new Error(`two different definitions are both named ${name}`);
        }
        defs.set(name, def);
        collect(def);
      }
    }
  };
  for (const [, schema] of roots) collect(schema);

  const unions = [...defs.entries(), ...roots].filter(([, schema]) => taggedMembers(schema) !== undefined);
  if (unions.length > 0) {
    out.doc("How a field is checked at run time: its JSON kind (`offset`: a non-negative integer, `any`: any value); `?` when it may be absent.");
    out.line("export type FieldRule = FieldKind | `${FieldKind}?`;");
    out.line("");
    out.doc("The kinds of {@link FieldRule}.");
    out.line(`export type FieldKind = "string" | "number" | "integer" | "offset" | "boolean" | "object" | "array" | "any";`);
    out.line("");
  }

  const version = document.version;
  if (typeof version === "number") {
    out.doc(typeof document.title === "string" ? `The version of ${document.title}.` : "The protocol version.");
    out.line(`export const PROTOCOL_VERSION = ${version};`);
    out.line("");
  }
  for (const [name, schema] of [...defs.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    out.declare(typeName(name), schema);
  }
  for (const [name, schema] of roots) {
    out.declare(name, schema);
  }
  for (const [name, schema] of unions) {
    out.fields(typeName(name), schema, (ref) => defs.get(ref));
  }
  return HEADER + "\n" + out.text();
}

class Emitter {
  #lines = [];

  text() {
    while (this.#lines.at(-1) === "") this.#lines.pop();
    return this.#lines.join("\n") + "\n";
  }

  line(text) {
    this.#lines.push(text);
  }

  doc(text, indent = "") {
    if (typeof text !== "string" || text.trim() === "") return;
    const lines = text.trim().split("\n").map((l) => l.trimEnd().replaceAll("*/", "*\\/"));
    if (lines.length === 1) {
      this.line(`${indent}/** ${lines[0]} */`);
      return;
    }
    this.line(`${indent}/**`);
    for (const l of lines) this.line(l === "" ? `${indent} *` : `${indent} * ${l}`);
    this.line(`${indent} */`);
  }

  /** Declares `name` for `schema`: an interface for an object, a union of interfaces for a tagged union, else a type alias. */
  declare(name, schema) {
    const members = taggedMembers(schema);
    if (members !== undefined) {
      const names = [];
      for (const { tag, member } of members) {
        const memberName = typeName(tag) + name;
        names.push(memberName);
        this.#interface(memberName, member, schema);
      }
      this.doc(description(schema));
      this.line(`export type ${name} =`);
      names.forEach((n, i) => this.line(`  | ${n}${i === names.length - 1 ? ";" : ""}`));
      this.line("");
      return;
    }
    const options = schema.oneOf ?? schema.anyOf;
    if (Array.isArray(options) && options.length > 0 && options.every((o) => constant(o) !== undefined)) {
      // An enumeration whose values carry their own descriptions.
      this.doc(description(schema));
      this.line(`export type ${name} =`);
      options.forEach((option, i) => {
        this.doc(description(option), "  ");
        this.line(`  | ${JSON.stringify(constant(option))}${i === options.length - 1 ? ";" : ""}`);
      });
      this.line("");
      return;
    }
    if (isObjectWithProperties(schema)) {
      this.#interface(name, schema, undefined);
      return;
    }
    this.doc(description(schema));
    this.line(`export type ${name} = ${typeOf(schema, "")};`);
    this.line("");
  }

  /** The field table of a tagged union: per tag, each field's {@link kindOf} (`?` when optional). */
  fields(name, schema, lookup) {
    const table = lowerFirst(name) + "Fields";
    this.doc(`The fields of each {@link ${name}}, by \`type\`, for checking a received one at run time.`);
    this.line(`export const ${table}: { readonly [T in ${name}["type"]]: { readonly [field: string]: FieldRule } } = {`);
    for (const { tag, member } of taggedMembers(schema)) {
      const merged = mergedObject(member, schema);
      const entries = Object.entries(merged.properties)
        .filter(([property]) => property !== "type")
        .map(([property, propertySchema]) => {
          const optional = !merged.required.has(property);
          return `${propertyKey(property)}: "${kindOf(propertySchema, lookup)}${optional ? "?" : ""}"`;
        });
      this.line(`  ${propertyKey(tag)}: { ${entries.join(", ")} },`.replace("{  }", "{}"));
    }
    this.line("};");
    this.line("");
  }

  #interface(name, schema, union) {
    this.doc(description(schema));
    const merged = mergedObject(schema, union);
    this.line(`export interface ${name} {`);
    for (const [property, propertySchema] of Object.entries(merged.properties)) {
      const optional = !merged.required.has(property);
      this.doc(description(propertySchema), "  ");
      const type = typeOf(optional ? withoutNull(propertySchema) : propertySchema, "  ");
      this.line(`  readonly ${propertyKey(property)}${optional ? "?" : ""}: ${type};`);
    }
    if (merged.additional !== undefined) {
      this.line(`  readonly [key: string]: ${merged.additional};`);
    }
    this.line("}");
    this.line("");
  }
}

/** The JSON kind of a field, for run-time checks (see `FieldKind` in the output). */
function kindOf(schema, lookup, seen = new Set()) {
  if (schema === true || schema === undefined || schema === false) return "any";
  if (typeof schema.$ref === "string") {
    const name = schema.$ref.split("/").at(-1);
    const target = lookup(name);
    if (target === undefined || seen.has(name)) return "any";
    return kindOf(target, lookup, new Set([...seen, name]));
  }
  const value = constant(schema);
  if (value !== undefined) return value === null ? "any" : jsonKind(value);
  if (Array.isArray(schema.enum)) return sameKind(schema.enum.map((v) => (v === null ? "null" : jsonKind(v))));
  for (const key of ["oneOf", "anyOf"]) {
    if (Array.isArray(schema[key])) return sameKind(schema[key].map((s) => (s?.type === "null" ? "null" : kindOf(s, lookup, seen))));
  }
  const types = (Array.isArray(schema.type) ? schema.type : schema.type === undefined ? [] : [schema.type]).filter(
    (t) => t !== "null",
  );
  if (types.length === 0) return schema.properties !== undefined ? "object" : "any";
  if (types.length > 1) return "any";
  const [type] = types;
  if (type === "integer") return typeof schema.minimum === "number" && schema.minimum >= 0 ? "offset" : "integer";
  return ["string", "number", "boolean", "object", "array"].includes(type) ? type : "any";
}

function sameKind(kinds) {
  const rest = [...new Set(kinds.filter((k) => k !== "null"))];
  return rest.length === 1 ? rest[0] : "any";
}

function jsonKind(value) {
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return ["string", "boolean", "object"].includes(typeof value) ? typeof value : "any";
}

function lowerFirst(text) {
  return text[0].toLowerCase() + text.slice(1);
}

/** The members of a tagged union (`oneOf`/`anyOf` of objects with a constant `type`), or undefined. */
function taggedMembers(schema) {
  const options = schema.oneOf ?? schema.anyOf;
  if (!Array.isArray(options) || options.length === 0) return undefined;
  const members = [];
  for (const member of options) {
    const tag = constant(member?.properties?.type);
    if (typeof tag !== "string") return undefined;
    members.push({ tag, member });
  }
  return members;
}

/** A member's own properties, plus those its union declares for every member. */
function mergedObject(schema, union) {
  const properties = { ...(union?.properties ?? {}), ...(schema.properties ?? {}) };
  const required = new Set([...(union?.required ?? []), ...(schema.required ?? [])]);
  let additional;
  const extra = schema.additionalProperties;
  if (extra !== undefined && extra !== false && extra !== true) {
    additional = typeOf(extra, "  ");
  }
  // The tag first, then the rest in the schema's order.
  const ordered = {};
  if ("type" in properties) ordered.type = properties.type;
  for (const [key, value] of Object.entries(properties)) if (key !== "type") ordered[key] = value;
  return { properties: ordered, required, additional };
}

/** The TypeScript type of a schema, written inline. */
function typeOf(schema, indent) {
  if (schema === true || schema === undefined) return "unknown";
  if (schema === false) return "never";
  if (typeof schema.$ref === "string") return typeName(schema.$ref.split("/").at(-1));
  const value = constant(schema);
  if (value !== undefined) return JSON.stringify(value);
  if (Array.isArray(schema.enum)) return union(schema.enum.map((v) => JSON.stringify(v)));
  for (const key of ["oneOf", "anyOf"]) {
    if (Array.isArray(schema[key])) return union(schema[key].map((s) => typeOf(s, indent)));
  }
  if (Array.isArray(schema.allOf)) {
    return schema.allOf.length === 1
      ? typeOf(schema.allOf[0], indent)
      : schema.allOf.map((s) => parenthesized(typeOf(s, indent))).join(" & ");
  }
  const types = Array.isArray(schema.type) ? schema.type : schema.type === undefined ? [] : [schema.type];
  if (types.length === 0) {
    return schema.properties !== undefined ? objectType(schema, indent) : "unknown";
  }
  return union(types.map((type) => primitive(type, schema, indent)));
}

function primitive(type, schema, indent) {
  switch (type) {
    case "string":
      return "string";
    case "integer":
    case "number":
      return "number";
    case "boolean":
      return "boolean";
    case "null":
      return "null";
    case "array": {
      if (Array.isArray(schema.prefixItems)) {
        return `readonly [${schema.prefixItems.map((s) => typeOf(s, indent)).join(", ")}]`;
      }
      return `readonly ${parenthesized(typeOf(schema.items, indent))}[]`;
    }
    case "object":
      return objectType(schema, indent);
    default:
      return "unknown";
  }
}

function objectType(schema, indent) {
  const properties = Object.entries(schema.properties ?? {});
  const extra = schema.additionalProperties;
  if (properties.length === 0) {
    if (extra === false) return "Record<string, never>";
    return `Readonly<Record<string, ${extra === undefined || extra === true ? "unknown" : typeOf(extra, indent)}>>`;
  }
  const required = new Set(schema.required ?? []);
  const inner = indent + "  ";
  const lines = properties.map(([key, value]) => {
    const optional = !required.has(key);
    return `${inner}readonly ${propertyKey(key)}${optional ? "?" : ""}: ${typeOf(optional ? withoutNull(value) : value, inner)};`;
  });
  if (extra !== undefined && extra !== false && extra !== true) {
    lines.push(`${inner}readonly [key: string]: ${typeOf(extra, inner)};`);
  }
  return `{\n${lines.join("\n")}\n${indent}}`;
}

/** `schema` without `null` among its types (see the header on optional properties). */
function withoutNull(schema) {
  if (schema === true || schema === false || schema === undefined) return schema;
  if (Array.isArray(schema.type) && schema.type.includes("null")) {
    const rest = schema.type.filter((t) => t !== "null");
    return { ...schema, type: rest.length === 1 ? rest[0] : rest };
  }
  for (const key of ["oneOf", "anyOf"]) {
    if (Array.isArray(schema[key])) {
      const rest = schema[key].filter((s) => !(s?.type === "null" && Object.keys(s).length === 1));
      if (rest.length !== schema[key].length) {
        const { [key]: _, ...others } = schema;
        return rest.length === 1 ? { ...others, ...rest[0] } : { ...others, [key]: rest };
      }
    }
  }
  return schema;
}

function union(parts) {
  const unique = [...new Set(parts)];
  return unique.length === 1 ? unique[0] : unique.map(parenthesized).join(" | ");
}

function parenthesized(type) {
  return /^[\w."[\]<>, ]+$/.test(type) && !type.includes(" | ") ? type : `(${type})`;
}

function constant(schema) {
  if (schema === null || typeof schema !== "object") return undefined;
  if ("const" in schema) return schema.const;
  if (Array.isArray(schema.enum) && schema.enum.length === 1) return schema.enum[0];
  return undefined;
}

function description(schema) {
  return schema !== null && typeof schema === "object" ? schema.description : undefined;
}

function isSchema(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    !Array.isArray(value) &&
    ["$schema", "$ref", "type", "oneOf", "anyOf", "allOf", "properties", "$defs", "definitions", "enum", "const"].some(
      (key) => key in value,
    )
  );
}

function isObjectWithProperties(schema) {
  return (schema.type === "object" || schema.type === undefined) && schema.properties !== undefined && schema.oneOf === undefined && schema.anyOf === undefined;
}

/** `snake_case`, `kebab-case` or `Title` to `PascalCase`. */
function typeName(text) {
  return String(text)
    .split(/[^A-Za-z0-9]+/)
    .filter((part) => part !== "")
    .map((part) => part[0].toUpperCase() + part.slice(1))
    .join("");
}

function propertyKey(key) {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? key : JSON.stringify(key);
}

// ---- command line ------------------------------------------------------------------------

const here = new URL(".", import.meta.url);
/** Where the generated module lives. */
export const OUTPUT = fileURLToPath(new URL("../src/protocol.generated.ts", here));

/** The release binary: `$WIREHUB_BIN`, else the repository's `target/release/wirehub`. */
export function wirehubBin() {
  const fromEnv = process.env.WIREHUB_BIN;
  return fromEnv !== undefined && fromEnv !== "" ? fromEnv : fileURLToPath(new URL("../../../target/release/wirehub", here));
}

/** Starts `wirehub serve` on a free port, fetches its schema, stops it. */
export async function schemaFromBinary(bin = wirehubBin()) {
  const child = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--log-format", "text"], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, RUST_LOG: "info", NO_COLOR: "1" },
  });
  try {
    const port = await new Promise((resolve, reject) => {
      let log = "";
      const timer = setTimeout(() => reject(new Error(`${bin} did not log its address within 10 s:\n${log}`)), 10_000);
      child.once("error", (error) => {
        clearTimeout(timer);
        reject(new Error(`could not start ${bin}: ${error.message} (build it with \`cargo build --release -p wirehub\` or set WIREHUB_BIN)`));
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`${bin} exited with ${code}:\n${log}`));
      });
      child.stderr.on("data", (chunk) => {
        log += chunk.toString();
        const match = log.match(/addr=127\.0\.0\.1:(\d+)/);
        if (match) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      });
    });
    return await schemaFromUrl(`http://127.0.0.1:${port}/schema/protocol.json`);
  } finally {
    child.kill("SIGKILL");
  }
}

/** Fetches a schema document. */
export async function schemaFromUrl(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`);
  return response.json();
}

async function main(args) {
  let schema;
  const at = (flag) => {
    const i = args.indexOf(flag);
    return i === -1 ? undefined : args[i + 1];
  };
  if (at("--file") !== undefined) {
    schema = JSON.parse(await readFile(at("--file"), "utf8"));
  } else if (at("--url") !== undefined) {
    schema = await schemaFromUrl(at("--url"));
  } else {
    schema = await schemaFromBinary(at("--bin"));
  }
  const text = generate(schema);
  if (args.includes("--check")) {
    const committed = await readFile(OUTPUT, "utf8").catch(() => "");
    if (committed !== text) {
      console.error(`${OUTPUT} is out of date with the server's schema: run \`npm run gen:protocol\``);
      process.exit(1);
    }
    return;
  }
  await writeFile(OUTPUT, text);
  console.error(`wrote ${OUTPUT}`);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).catch((error) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
