// Runs the built Worker in the real local runtime: `wrangler dev` (workerd underneath), on a
// free loopback port, with its Durable Object state in a directory the test chooses so that a
// restart can come back to the same rooms.

import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

export const ROOT = resolve(import.meta.dirname, '../..');
const WRANGLER = join(ROOT, 'node_modules/.bin/wrangler');

/**
 * Vars for tests that play many clients from one loopback address, as a busy NAT would: the
 * per-client and per-room budgets (which key every local socket alike) lifted out of the way,
 * so that a test measures what it is about. The per-socket limit (RATE_BURST) stays.
 */
export const MANY_CLIENTS_ONE_ADDRESS = {
  CLIENT_BURST: '1000000',
  CLIENT_PER_SECOND: '1000000',
  ROOM_MESSAGES_PER_SECOND: '1000000',
  CLIENT_JOINS_PER_10S: '1000000',
  MAX_SOCKETS_PER_IP: '1000000',
};

export function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.unref();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

export function tempDir(prefix) {
  return mkdtempSync(join(tmpdir(), `edge-chat-${prefix}-`));
}

/** Polls `check` until it returns a truthy value, or fails after `timeoutMs`. */
export async function waitFor(check, { timeoutMs = 10_000, what = 'condition', everyMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    await delay(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${lastError.message}` : ''}`);
}

export class ChatServer {
  /**
   * @param {object} options
   * @param {string} [options.persistDir] Durable Object state; a fresh temp dir by default.
   * @param {Record<string,string>} [options.vars] Worker vars to override.
   * @param {number} [options.requestsPerMinute] the rate limiting binding's limit per client
   *   address; tests run every client from one address, so it is high unless a test lowers it.
   */
  constructor({ persistDir = tempDir('state'), vars = {}, requestsPerMinute = 100_000 } = {}) {
    this.persistDir = persistDir;
    this.vars = vars;
    this.requestsPerMinute = requestsPerMinute;
    this.child = null;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}`;
  }

  async start() {
    this.port = this.port ?? (await freePort());
    const inspectorPort = await freePort();
    const varArgs = Object.entries(this.vars).flatMap(([key, value]) => ['--var', `${key}:${value}`]);
    const log = openSync(join(this.persistDir, 'wrangler.log'), 'a');
    const config = this.writeConfig();
    this.child = spawn(
      WRANGLER,
      [
        'dev', '--ip', '127.0.0.1', '--port', String(this.port), '--inspector-port', String(inspectorPort),
        '--persist-to', this.persistDir, '--config', config, '--show-interactive-dev-session=false', ...varArgs,
      ],
      {
        cwd: ROOT,
        detached: true, // its own process group, so that stopping it stops workerd too
        stdio: ['ignore', log, log],
        env: { ...process.env, WRANGLER_SEND_METRICS: 'false', NO_COLOR: '1' },
      },
    );
    const exited = new Promise((done) => this.child.once('exit', done));
    this.exited = exited;
    await waitFor(
      async () => {
        if (this.child.exitCode !== null) throw new Error(`wrangler exited (see ${this.persistDir}/wrangler.log)`);
        const response = await fetch(`${this.url}/health`);
        return response.status === 200;
      },
      { timeoutMs: 60_000, what: `wrangler dev on port ${this.port}`, everyMs: 100 },
    );
    return this;
  }

  /**
   * The project's wrangler.toml with the request limit this server was given, its paths made
   * absolute and without the build step (the test command has built already).
   */
  writeConfig() {
    const original = readFileSync(join(ROOT, 'wrangler.toml'), 'utf8');
    const config = original
      .replace(/^main = "(.*)"$/m, (_, path) => `main = ${JSON.stringify(join(ROOT, path))}`)
      .replace(/^directory = "(.*)"$/m, (_, path) => `directory = ${JSON.stringify(join(ROOT, path))}`)
      .replace(/^\[build\]\ncommand = .*$/m, '')
      .replace(/simple = \{ limit = \d+, period = 60 \}/, `simple = { limit = ${this.requestsPerMinute}, period = 60 }`);
    if (config.includes('[build]') || !config.includes(`limit = ${this.requestsPerMinute},`)) {
      throw new Error('wrangler.toml changed shape: update ChatServer.writeConfig');
    }
    const path = join(this.persistDir, 'wrangler.toml');
    writeFileSync(path, config);
    return path;
  }

  /** Stops the runtime with `signal` (the whole process group) and waits until it is gone. */
  async stop(signal = 'SIGTERM') {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    try {
      process.kill(-this.child.pid, signal);
    } catch {
      return;
    }
    await Promise.race([this.exited, delay(10_000)]);
    try {
      process.kill(-this.child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    // The port is free again once nothing accepts on it.
    await waitFor(async () => {
      try {
        await fetch(`${this.url}/health`);
        return false;
      } catch {
        return true;
      }
    }, { timeoutMs: 10_000, what: 'the old runtime to release its port' });
  }

  async restart(signal = 'SIGTERM') {
    await this.stop(signal);
    return this.start();
  }
}
