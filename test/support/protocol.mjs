// Holds the tests to the machine-readable protocol: every frame a ChatClient receives or sends,
// and every JSON body sent or fetched with `fetchJson`, is validated with ajv against asyncapi.yaml
// and openapi.yaml. The schemas are found through the documents themselves (the operations' messages,
// the paths' responses), so a frame type or a status the documents do not list is a violation too.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Ajv2020 from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { ROOT } from './server.mjs';

export const asyncapi = parse(readFileSync(join(ROOT, 'asyncapi.yaml'), 'utf8'));
export const openapi = parse(readFileSync(join(ROOT, 'openapi.yaml'), 'utf8'));

// Strict: a misspelt keyword in a schema is an error, not an ignored annotation. Each document's
// schemas are added under its file name, so that `#/components/schemas/X` and openapi.yaml's
// `./asyncapi.yaml#/components/schemas/X` resolve as they do for any tool reading the files.
export const ajv = new Ajv2020({ strict: true, allErrors: true });
ajv.addVocabulary(['components']);
ajv.addSchema({ components: { schemas: asyncapi.components.schemas } }, 'asyncapi.yaml');
ajv.addSchema({ components: { schemas: openapi.components.schemas } }, 'openapi.yaml');

/** Follows a local `$ref` (`#/a/b`) inside `document`. */
export function resolve(document, ref) {
  if (!ref.startsWith('#/')) throw new Error(`not a local reference: ${ref}`);
  const value = ref
    .slice(2)
    .split('/')
    .reduce((node, key) => node?.[key.replaceAll('~1', '/').replaceAll('~0', '~')], document);
  if (value === undefined) throw new Error(`${ref} does not resolve`);
  return value;
}

const deref = (document, node) => (node?.$ref ? deref(document, resolve(document, node.$ref)) : node);

function validatorFor(file, ref) {
  const validate = ajv.getSchema(`${file}${ref}`);
  if (!validate) throw new Error(`no schema at ${file}${ref}`);
  return validate;
}

/**
 * The `type` const of an object frame's schema, or of every alternative of a `oneOf` of object
 * frames (a message frame is a text message or a tombstone); null for other schemas.
 */
function frameType(schema) {
  if (schema.type === 'object') return schema.properties.type.const;
  if (!schema.oneOf) return null;
  const types = new Set(schema.oneOf.map((alternative) => frameType(deref(asyncapi, alternative))));
  if (types.size !== 1 || types.has(null)) throw new Error(`${schema.title}: alternatives of different types`);
  return [...types][0];
}

/**
 * The frames of one AsyncAPI operation, sorted by how they are told apart: JSON objects by
 * their `type` const, plain text frames and arrays by their schemas.
 */
function framesOf(operationId) {
  const frames = { byType: new Map(), text: [], array: [] };
  for (const reference of asyncapi.operations[operationId].messages) {
    const message = deref(asyncapi, reference);
    const validate = validatorFor('asyncapi.yaml', message.payload.$ref);
    const schema = deref(asyncapi, message.payload);
    const type = frameType(schema);
    if (type) frames.byType.set(type, validate);
    else if (schema.type === 'string') frames.text.push(validate);
    else if (schema.type === 'array') frames.array.push(validate);
    else throw new Error(`${message.name}: payload of unknown shape`);
  }
  return frames;
}

const serverFrames = framesOf('sendServerFrames');
const clientFrames = framesOf('receiveClientFrames');

function problemWith(validate, value, dataVar = 'frame') {
  return validate(value) ? null : ajv.errorsText(validate.errors, { dataVar });
}

/** Why a text or binary frame breaks the documented `frames`, or null if it keeps to them. */
function checkFrame(frames, text, isBinary) {
  if (isBinary) return 'a binary frame';
  // As the server reads a frame: JSON only if it starts with '{', no whitespace allowed before.
  const start = text[0];
  if (start === '{' || (start === '[' && frames.array.length)) {
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      return 'a frame that starts like JSON but is not JSON';
    }
    if (Array.isArray(value)) {
      const problems = frames.array.map((validate) => problemWith(validate, value));
      return problems.includes(null) ? null : problems.join('; ');
    }
    const validate = frames.byType.get(value?.type);
    if (!validate) return `a frame of undocumented type ${JSON.stringify(value?.type)}`;
    return problemWith(validate, value);
  }
  const problems = frames.text.map((validate) => problemWith(validate, text));
  return problems.includes(null) ? null : `a plain text frame that no schema admits (${problems.join('; ')})`;
}

/** Why a frame the server sent breaks asyncapi.yaml, or null. */
export function serverFrameProblem(text, isBinary = false) {
  const problem = checkFrame(serverFrames, text, isBinary);
  return problem && `server sent ${problem}: ${text.slice(0, 200)}`;
}

/** Why a frame a client means to send (an object, or the text as sent) breaks asyncapi.yaml, or null. */
export function clientFrameProblem(frame) {
  const text = typeof frame === 'string' ? frame : JSON.stringify(frame);
  const problem = checkFrame(clientFrames, text, false);
  return problem && `client frame breaks asyncapi.yaml: ${problem}: ${text.slice(0, 200)}`;
}

/** Every violation by a server seen so far and not yet reported by `assertProtocolKept`. */
const violations = [];

export function recordViolation(problem) {
  violations.push(problem);
}

/** Throws (failing the test) if any server frame broke the protocol since the last call. */
export function assertProtocolKept() {
  const seen = violations.splice(0);
  if (seen.length) throw new Error(`${seen.length} frame(s) broke asyncapi.yaml:\n${seen.join('\n')}`);
}

const pathTemplates = Object.keys(openapi.paths).map((template) => ({
  template,
  pattern: new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`),
}));

/**
 * The documented response for `status` on `method path`, with a JSON pointer to it. A path
 * no template matches gets the documented NotFound response.
 */
function documentedResponse(method, path, status) {
  // The server sees the path after the URL parser resolved dot segments ('..', '%2E%2E').
  const pathname = new URL(path, 'http://localhost').pathname;
  const match = pathTemplates.find(({ pattern }) => pattern.test(pathname));
  if (!match) return status === 404 ? { ref: '#/components/responses/NotFound' } : null;
  const operation = openapi.paths[match.template][method.toLowerCase()];
  // A method the path does not list is answered 405, as the document's description says.
  if (!operation) return status === 405 ? { ref: '#/components/responses/MethodNotAllowed' } : null;
  const responses = operation.responses ?? {};
  const response = responses[String(status)] ?? responses.default;
  if (!response) return null;
  return { ref: response.$ref, inline: response.$ref ? null : response, where: `${method} ${match.template}` };
}

/** Why an HTTP answer breaks openapi.yaml (undocumented status, wrong type or body), or null. */
export function httpProblem({ method = 'GET', path, status, contentType, body }) {
  const found = documentedResponse(method, path, status);
  if (!found) return `${method} ${path}: status ${status} is not documented in openapi.yaml`;
  const response = found.ref ? resolve(openapi, found.ref) : found.inline;
  const media = Object.keys(response.content ?? {});
  if (media.length === 0) return body === undefined ? null : `${method} ${path}: ${status} has a body, none documented`;
  const type = media.find((name) => contentType?.split(';')[0].trim() === name);
  if (!type) return `${method} ${path}: content-type ${contentType} is not one of ${media.join(', ')}`;
  const schemaRef = response.content[type].schema.$ref;
  if (!schemaRef) return `openapi.yaml: give ${found.ref ?? found.where} a $ref schema so that it can be checked`;
  const problem = problemWith(validatorFor('openapi.yaml', schemaRef), body, 'body');
  const shown = JSON.stringify(body)?.slice(0, 200);
  return problem && `${method} ${path} ${status} breaks openapi.yaml: ${problem}: ${shown}`;
}

/** Why a JSON request body breaks the documented request body of `method path`, or null. */
export function requestProblem({ method, path, body }) {
  const pathname = new URL(path, 'http://localhost').pathname;
  const match = pathTemplates.find(({ pattern }) => pattern.test(pathname));
  const requestBody = match && openapi.paths[match.template][method.toLowerCase()]?.requestBody;
  const schemaRef = requestBody?.content?.['application/json']?.schema?.$ref;
  if (!schemaRef) return `${method} ${path}: openapi.yaml documents no JSON request body`;
  const problem = problemWith(validatorFor('openapi.yaml', schemaRef), body, 'request');
  return problem && `${method} ${path}: the request body breaks openapi.yaml: ${problem}: ${JSON.stringify(body)}`;
}

/**
 * Fetches `base + path` and checks the JSON answer against openapi.yaml, and returns it.
 * `init.json` is a request body that is checked against the documented one before it is sent
 * as JSON; a test sends deliberately bad bodies as a string in `init.body`, unchecked.
 */
export async function fetchJson(base, path, { json, ...init } = {}) {
  const method = init.method ?? 'GET';
  if (json !== undefined) {
    const problem = requestProblem({ method, path, body: json });
    if (problem) throw new Error(`${problem} (send deliberate bad input as a string body)`);
    init.body = JSON.stringify(json);
    init.headers = { 'content-type': 'application/json', ...init.headers };
  }
  const response = await fetch(`${base}${path}`, init);
  const answer = { status: response.status, headers: response.headers, type: response.headers.get('content-type') };
  answer.body = await response.json();
  const problem = httpProblem({ method, path, status: answer.status, contentType: answer.type, body: answer.body });
  if (problem) throw new Error(problem);
  return answer;
}

/** Every stored message of a room on `server`, oldest first, paging forward with `since`; each page is checked. */
export async function storedMessages(server, room) {
  const all = [];
  for (;;) {
    const since = all.at(-1)?.id ?? 0;
    const { body: page } = await fetchJson(server.url, `/chat/${room}/history?since=${since}&limit=100`);
    if (page.messages.length === 0) return all;
    all.push(...page.messages);
  }
}
