#!/usr/bin/env node
// Mints a ticket: `npm run ticket -- --sub u1 --name Ann --room lobby --role member --ttl 3600`.
// The secret is TICKET_SECRET from the environment, else from .dev.vars (what `wrangler dev`
// reads), so a ticket minted here opens rooms on the local server. Applications mint their own
// the same way (see the README); this is the reference and what the tests use.

import { createHmac } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const base64url = (data) => Buffer.from(data).toString('base64url');

/** A compact HS256 JWT for `claims` (exp and nbf in Unix seconds). */
export function mintTicket(claims, secret) {
  const input = `${base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${base64url(JSON.stringify(claims))}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

function secretFromDevVars() {
  const file = join(import.meta.dirname, '..', '.dev.vars');
  if (!existsSync(file)) return undefined;
  const line = readFileSync(file, 'utf8').split('\n').find((l) => l.startsWith('TICKET_SECRET='));
  return line?.slice('TICKET_SECRET='.length).trim().replace(/^"(.*)"$/, '$1');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      sub: { type: 'string' },
      name: { type: 'string' },
      room: { type: 'string', default: '*' },
      role: { type: 'string', default: 'member' },
      ttl: { type: 'string', default: '3600' },
    },
  });
  const secret = process.env.TICKET_SECRET ?? secretFromDevVars();
  const ttl = Number(values.ttl);
  const problems = [
    !values.sub && '--sub is required',
    !values.name && '--name is required',
    !['member', 'moderator', 'readonly'].includes(values.role) && '--role is member, moderator or readonly',
    !(Number.isInteger(ttl) && ttl > 0) && '--ttl is a whole number of seconds',
    !secret && 'set TICKET_SECRET (or put it in .dev.vars)',
    secret && Buffer.byteLength(secret) < 32 && 'TICKET_SECRET must be at least 32 bytes',
  ].filter(Boolean);
  if (problems.length) {
    console.error(`ticket: ${problems.join('; ')}`);
    process.exit(2);
  }
  const now = Math.floor(Date.now() / 1000);
  const { sub, name, room, role } = values;
  console.log(mintTicket({ sub, name, room, role, iat: now, exp: now + ttl }, secret));
}
