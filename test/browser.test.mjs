// The browser client and the widget in a real headless Chromium (Debian's, driven by
// playwright-core), against the built Worker in workerd. Each test uses its own room and
// saves screenshots under test-results/ for a person to look at.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { mintTicket } from '../scripts/ticket.mjs';
import { ChatClient } from './support/client.mjs';
import { ChatServer, freePort, MANY_CLIENTS_ONE_ADDRESS, ROOT, waitFor } from './support/server.mjs';
import { exactly, launchChromium, online, say, WAIT_MS, watch } from './support/browser.mjs';

const RESULTS = join(ROOT, 'test-results');
const XSS = '<img src=x onerror=alert(1)>';
const TICKET_SECRET = 'browser-test-ticket-secret-32-bytes!';
// Rooms under this prefix need a ticket.
const PRIVATE = 'private-';
// Lifts every per-socket, per-client and per-room limit (names a server does not know are ignored),
// so that one test client can flood a room past the page's log cap.
const LIFTED = Object.fromEntries(
  ['RATE_BURST', 'RATE_PER_SECOND', 'CLIENT_BURST', 'CLIENT_PER_SECOND', 'ROOM_MESSAGES_PER_SECOND'].map((name) => [
    name,
    '100000',
  ]),
);

let server;
let browser;
let host;
let hostOrigin;
let roomCounter = 0;
const freshRoom = (label) => `${label}-${process.pid}-${++roomCounter}`;

function ticket(sub, name, role = 'member') {
  return mintTicket({ sub, name, room: '*', role, exp: Math.floor(Date.now() / 1000) + 3600 }, TICKET_SECRET);
}

const usersOf = async (room) => (await (await fetch(`${server.url}/chat/${room}/users`)).json()).users;

before(async () => {
  mkdirSync(RESULTS, { recursive: true });
  const hostPort = await freePort();
  hostOrigin = `http://127.0.0.1:${hostPort}`;
  host = await startHostSite(hostPort);
  server = new ChatServer({
    vars: { ALLOWED_ORIGINS: hostOrigin, TICKET_SECRET, PRIVATE_ROOMS: `${PRIVATE}*`, ...MANY_CLIENTS_ONE_ADDRESS, ...LIFTED },
  });
  [browser] = await Promise.all([
    launchChromium(),
    server.start(),
  ]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
  host?.close();
});

/**
 * Opens the full page in its own browser context (its own storage, like another person) and
 * waits until it is connected. Records dialogs and uncaught page errors.
 */
async function openPage(room, { nick, ticket, viewport = { width: 1100, height: 720 }, colorScheme = 'light', wait = true } = {}) {
  const context = await browser.newContext({ viewport, colorScheme });
  const page = await context.newPage();
  watch(page);
  page.sockets = [];
  page.on('websocket', (socket) => page.sockets.push(socket.url()));
  const query = new URLSearchParams({ room, ...(nick ? { nick } : {}), ...(ticket ? { ticket } : {}) });
  await page.goto(`${server.url}/?${query}`);
  if (wait) await online(page);
  return page;
}

/** The text of the message that says exactly `text` (Playwright's CSS locators pierce shadow roots). */
function messageText(page, text) {
  return page.locator('.ec-msg .ec-text').filter({ hasText: exactly(text) });
}

/** The whole entry of that message: author, time and text. */
function messageItem(page, text) {
  return page.locator('.ec-msg').filter({ has: page.locator('.ec-text').filter({ hasText: exactly(text) }) });
}

function user(page, nick) {
  return page.locator('.ec-users .ec-user-name').filter({ hasText: exactly(nick) });
}

function systemLine(page, text) {
  return page.locator('.ec-system').filter({ hasText: text });
}

async function see(locator, timeout = WAIT_MS) {
  await locator.first().waitFor({ timeout });
}

function screenshot(page, name) {
  return page.screenshot({ path: join(RESULTS, `browser-${name}.png`), animations: 'disabled' });
}

/** Has six clients (each with its own rate limit) send 120 messages, more than a welcome holds. */
async function sendMany(room, label) {
  const senders = await Promise.all(
    Array.from({ length: 6 }, (_, i) => ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=${label}${i}`)),
  );
  await Promise.all(senders.map((sender) => sender.welcome()));
  const texts = [];
  for (const [i, sender] of senders.entries()) {
    for (let n = 1; n <= 20; n += 1) {
      const text = `${label} ${i}-${n}`;
      texts.push(text);
      sender.say(text);
    }
  }
  const echoes = await Promise.all(texts.map((text, k) => senders[Math.floor(k / 20)].next({ type: 'message', text })));
  await Promise.all(senders.map((sender) => sender.close()));
  return echoes.sort((a, b) => a.id - b.id).map((echo) => echo.text);
}

/** Every one of `texts` appears exactly once, and the log is in id order. */
async function assertShownOnce(page, texts) {
  const shown = await page.locator('.ec-msg').evaluateAll((items) =>
    items.map((item) => ({ id: Number(item.dataset.id), text: item.querySelector('.ec-text').textContent })),
  );
  assert.deepEqual(shown.map((m) => m.text), texts, 'every message exactly once, in order');
  const ids = shown.map((m) => m.id);
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
  assert.equal(new Set(ids).size, ids.length);
}

/** Records dialogs, uncaught errors and console errors (CSP or CORS refusals among them). */
function assertCalm(page) {
  assert.deepEqual(page.dialogs, [], 'no dialog opened');
  assert.deepEqual(page.errors, [], 'no errors in the page or its console');
}

/**
 * A user's comment as a sanitiser would let it through (data-* attributes kept): hidden elements
 * that ask for a chat in the host's room and in rooms of the attacker's, under the nick Admin.
 */
function hostileComment(room, label, count) {
  const divs = Array.from({ length: count }, (_, i) => {
    const target = i % 2 ? room : `${room}-${label}-${i}`;
    return `<div hidden data-edge-chat-room="${target}" data-edge-chat-nick="Admin"></div>`;
  });
  return `<article class="comment"><p>Great post!</p>${divs.join('')}</article>`;
}

/**
 * A second local origin whose page embeds the widget, with hostile styles of its own; with
 * `hostile`, its comments hold hostileComment()s, 20 in the page and 20 more added after load.
 */
function startHostSite(port) {
  const server = createServer((request, response) => {
    const url = new URL(request.url, `http://127.0.0.1:${port}`);
    const chatOrigin = url.searchParams.get('chat');
    const room = url.searchParams.get('room');
    if (url.pathname !== '/' || !chatOrigin || !room) {
      response.writeHead(404).end();
      return;
    }
    const hostile = url.searchParams.has('hostile');
    // The snippet documented before mounting became explicit: no data-mount, a nick on the element.
    const legacy = url.searchParams.has('legacy');
    // A ticket is base64url with dots: nothing in it needs escaping in an attribute.
    const ticket = url.searchParams.get('ticket');
    const ticketAttribute = ticket ? ` data-edge-chat-ticket="${ticket}"` : '';
    const loader = legacy
      ? `<script src="${chatOrigin}/embed.js" async></script>`
      : `<script src="${chatOrigin}/embed.js" data-mount="#widget" data-nick="Widgeteer"${ticketAttribute} async></script>`;
    const later = JSON.stringify(hostileComment(room, 'later', 20));
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end(`<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Partner site</title>
  <link rel="icon" href="data:,">
  <style>
    * { color: rgb(255, 0, 0) !important; font-family: serif !important; }
    li, p, button, textarea { border: 3px dashed rgb(0, 255, 0) !important; }
    .ec-list, .ec-text { display: none !important; }
    body { margin: 24px; background: #fffbe8; }
  </style>
</head>
<body>
  <h1>Partner site</h1>
  <p id="host-text">The partner's own content, with the chat embedded below.</p>
  <span class="ec-bubble" id="decoy">not a chat bubble</span>
  ${hostile ? hostileComment(room, 'before', 10) : ''}
  <div id="widget" data-edge-chat-room="${room}" ${legacy ? 'data-edge-chat-nick="Widgeteer"' : ''}
    style="width: 420px; height: 480px">Loading chat…</div>
  ${hostile ? hostileComment(room, 'after', 10) : ''}
  <section id="comments"></section>
  ${loader}
  ${hostile ? `<script>
    addEventListener('load', () => {
      document.getElementById('comments').insertAdjacentHTML('beforeend', ${later.replaceAll('<', '\\u003c')});
      document.body.dataset.commentsLoaded = 'yes';
    });
  </script>` : ''}
</body>
</html>`);
  });
  return new Promise((done) => server.listen(port, '127.0.0.1', () => done(server)));
}

describe('the chat page', () => {
  test('two pages see each other\'s messages and presence, and a leave', { timeout: 60_000 }, async () => {
    const room = freshRoom('pair');
    const ann = await openPage(room, { nick: 'Ann' });
    const bob = await openPage(room, { nick: 'Bob' });

    await see(user(ann, 'Bob'));
    await see(user(bob, 'Ann'));
    await see(systemLine(ann, 'Bob joined'));
    assert.equal(await ann.locator('.ec-my-nick').textContent(), 'Ann');

    await say(ann, 'Hi Bob, welcome to the room!');
    await see(messageText(bob, 'Hi Bob, welcome to the room!'));
    await say(bob, 'Thanks Ann 👋\nGlad to be here.');
    await see(messageText(ann, 'Thanks Ann 👋\nGlad to be here.'));

    const annOnBob = messageItem(bob, 'Hi Bob, welcome to the room!');
    assert.equal(await annOnBob.locator('.ec-author').textContent(), 'Ann');
    assert.equal((await annOnBob.getAttribute('class')).includes('ec-own'), false);
    const ownOnAnn = messageItem(ann, 'Hi Bob, welcome to the room!');
    assert.ok((await ownOnAnn.getAttribute('class')).includes('ec-own'), 'own messages look different');

    // Enter on blank text sends nothing.
    await say(ann, '   ');
    await say(ann, 'after the blank');
    await see(messageText(bob, 'after the blank'));
    assert.equal(await bob.locator('.ec-msg').count(), 3);

    assert.match(await bob.locator('[aria-live="polite"]').textContent(), /Ann: Hi Bob, welcome to the room!/);

    await screenshot(ann, 'pair-ann');
    await screenshot(bob, 'pair-bob');

    await bob.context().close();
    await see(systemLine(ann, 'Bob left'));
    await user(ann, 'Bob').waitFor({ state: 'detached', timeout: WAIT_MS });
    assert.equal(await ann.locator('.ec-users li').count(), 1);
    await screenshot(ann, 'pair-after-leave');
    assertCalm(ann);
    await ann.context().close();
  });

  test('a nick change shows on both pages, and a taken nick is refused inline', { timeout: 60_000 }, async () => {
    const room = freshRoom('nick');
    const one = await openPage(room, { nick: 'Early' });
    const two = await openPage(room, { nick: 'Later', viewport: { width: 360, height: 720 } });
    await see(user(one, 'Later'));
    await user(two, 'Early').waitFor({ state: 'attached', timeout: WAIT_MS });

    await one.getByRole('button', { name: 'Change nickname' }).click();
    const field = one.getByLabel('Nickname', { exact: true });
    await field.fill('Later');
    await field.press('Enter');
    await see(one.locator('.ec-field-error', { hasText: 'already taken' }));
    assert.equal(await one.locator('.ec-my-nick').textContent(), 'Early');

    await field.fill('Renamed');
    await field.press('Enter');
    await see(one.locator('.ec-my-nick', { hasText: /^Renamed$/ }));
    await see(systemLine(two, 'Early is now Renamed'));
    // The narrow page keeps the people list in the DOM, behind a toggle.
    await user(two, 'Renamed').waitFor({ state: 'attached', timeout: WAIT_MS });
    await user(two, 'Early').waitFor({ state: 'detached', timeout: WAIT_MS });
    assert.equal(await field.isVisible(), false, 'the form closes once renamed');

    await say(one, 'new name, same me');
    const seen = messageItem(two, 'new name, same me');
    await see(seen);
    assert.equal(await seen.locator('.ec-author').textContent(), 'Renamed');

    // The narrow page lists people behind a toggle.
    await two.getByRole('button', { name: /^People/ }).click();
    await see(two.locator('.ec[data-people="open"]'));
    await user(two, 'Renamed').waitFor({ state: 'visible' });
    await screenshot(two, 'nick-narrow');
    await screenshot(one, 'nick-wide');
    assertCalm(one);
    assertCalm(two);
    await one.context().close();
    await two.context().close();
  });

  test('HTML in a message is shown as text and runs nothing', { timeout: 60_000 }, async () => {
    const room = freshRoom('xss');
    const sender = await openPage(room, { nick: 'Mallory' });
    const reader = await openPage(room, { nick: 'Reader', colorScheme: 'dark' });

    await say(sender, XSS);
    await say(sender, '<b>not bold</b> & <script>alert(2)</script>');
    const shown = messageText(reader, XSS);
    await see(shown);
    await see(messageText(reader, '<b>not bold</b> & <script>alert(2)</script>'));
    assert.equal(await shown.textContent(), XSS);
    // Had the text become markup, the broken image would have fired onerror by now; a later
    // message round trip gives it time.
    await say(sender, 'sentinel');
    await see(messageText(reader, 'sentinel'));
    for (const page of [reader, sender]) {
      assert.equal(await page.locator('img').count(), 0, 'no img element anywhere, shadow roots included');
      assert.equal(await page.locator('.ec-text b, .ec-text script').count(), 0);
      assertCalm(page);
    }
    await screenshot(reader, 'xss');
    await sender.context().close();
    await reader.context().close();
  });

  test('after a runtime restart the page reconnects and shows what it missed exactly once', { timeout: 90_000 }, async () => {
    const room = freshRoom('restart');
    const page = await openPage(room, { nick: 'Phoenix' });
    const sockets = [];
    const historyFetches = [];
    page.on('websocket', (socket) => sockets.push(socket.url()));
    page.on('request', (request) => request.url().includes('/history?') && historyFetches.push(request.url()));

    const early = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Early`);
    await early.welcome();
    const before = await early.sayAndWait('before the restart');
    await see(messageText(page, 'before the restart'));

    await server.stop();
    await see(page.locator('.ec[data-status="waiting"]'));
    await see(systemLine(page, 'Connection lost'));
    // Keep the page away until the messages below are sent, whatever its backoff would do.
    await page.context().setOffline(true);
    await server.start();
    const missed = await sendMany(room, 'missed');
    await page.context().setOffline(false);

    await online(page, 30_000);
    await see(messageText(page, missed.at(-1)), 30_000);
    await early.close();
    const late = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Late`);
    await late.welcome();
    await late.sayAndWait('after catching up');
    await see(messageText(page, 'after catching up'));

    await assertShownOnce(page, ['before the restart', ...missed, 'after catching up']);
    // Resumed from the last change seen (its sequence number), not from a message id.
    assert.ok(
      sockets.some((url) => new URL(url).searchParams.get('after') === String(before.seq)),
      `reconnected with after=${before.seq}: ${sockets.join(', ')}`,
    );
    assert.ok(historyFetches.length > 0, 'more than a welcome\'s worth was fetched from the history route');
    assert.equal(await page.locator('.ec-my-nick').textContent(), 'Phoenix', 'the nick survives the restart');
    await see(systemLine(page, 'Reconnected'));
    await screenshot(page, 'restart');

    // A reader who scrolled up stays where they are, and is told what arrived below.
    const log = page.locator('.ec-log');
    await log.evaluate((element) => (element.scrollTop = 0));
    await late.sayAndWait('while you were reading');
    await see(page.locator('.ec-jump', { hasText: '1 new message' }));
    assert.equal(await log.evaluate((element) => element.scrollTop), 0);
    await page.locator('.ec-jump').click();
    await page.locator('.ec-jump').waitFor({ state: 'hidden' });
    assert.ok(await log.evaluate((e) => e.scrollHeight - e.scrollTop - e.clientHeight < 2), 'back at the newest');
    assertCalm(page);
    await late.close();
    await page.context().close();
  });

  test('the room switcher moves to another room and back', { timeout: 60_000 }, async () => {
    const first = freshRoom('first');
    const second = freshRoom('second');
    const page = await openPage(first, { nick: 'Traveller' });
    await say(page, 'in the first room');
    await see(messageText(page, 'in the first room'));

    await page.getByRole('button', { name: 'Switch room' }).click();
    const field = page.getByLabel('Room', { exact: true });
    await field.fill('no spaces allowed');
    await field.press('Enter');
    await see(page.locator('.ec-field-error', { hasText: 'Room names are' }));
    await field.fill(second);
    await field.press('Enter');
    await see(page.locator('.ec-room-name', { hasText: exactly(second) }));
    await online(page);
    assert.equal(new URL(page.url()).searchParams.get('room'), second);
    assert.equal(await page.title(), `#${second} · edge chat`);
    assert.equal(await messageText(page, 'in the first room').count(), 0, 'the log starts afresh');
    assert.deepEqual((await (await fetch(`${server.url}/chat/${first}/users`)).json()).users, []);

    await page.goBack();
    await see(page.locator('.ec-room-name', { hasText: exactly(first) }));
    await see(messageText(page, 'in the first room'));
    await online(page);
    assertCalm(page);
    await page.context().close();
  });
});

describe('what one user can do to another\'s page', () => {
  test('a nick "You" and a text with RLO render isolated, and own messages are marked by what no nick can spell', { timeout: 60_000 }, async () => {
    const room = freshRoom('spoof');
    const reader = await openPage(room, { nick: 'Reader' });
    const you = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=You`);
    await you.welcome();
    // Shown without isolation this reads "invoice_exe.png" and reorders what follows it.
    const tricky = 'invoice_\u202Egnp.exe';
    await you.sayAndWait(tricky);
    await say(reader, 'my own words');
    const theirs = messageItem(reader, tricky);
    const mine = messageItem(reader, 'my own words');
    await see(theirs);
    await see(mine);

    const isolated = [
      theirs.locator('.ec-author'), theirs.locator('.ec-text'), mine.locator('.ec-author'), mine.locator('.ec-text'),
      user(reader, 'You'), reader.locator('.ec-my-nick'), systemLine(reader, 'You joined').locator('b'),
    ];
    for (const element of isolated) {
      const { dir, bidi, text } = await element.evaluate((e) => ({
        dir: e.getAttribute('dir'), bidi: getComputedStyle(e).unicodeBidi, text: e.textContent,
      }));
      assert.equal(dir, 'auto', `dir of ${text}`);
      assert.equal(bidi, 'isolate', `unicode-bidi of ${text}`);
    }

    // The other user's message carries their nick and nothing that marks a message as one's own...
    assert.equal(await theirs.locator('.ec-author').textContent(), 'You');
    assert.equal((await theirs.getAttribute('class')).includes('ec-own'), false);
    assert.equal(await theirs.locator('.ec-own-label').count(), 0);
    // ...while one's own carries one's real nick, and is marked outside the nick by a class and a label
    // with spaces, which no nick can contain.
    assert.equal(await mine.locator('.ec-author').textContent(), 'Reader');
    assert.ok((await mine.getAttribute('class')).includes('ec-own'));
    assert.equal(await mine.locator('.ec-own-label').textContent(), 'sent by you');
    assert.equal(await mine.locator('.ec-author .ec-own-label').count(), 0);
    assert.equal(await reader.locator('.ec-user-me .ec-user-name').textContent(), 'Reader');
    assert.equal(await reader.locator('.ec-user-me').count(), 1);
    await screenshot(reader, 'spoof');
    assertCalm(reader);
    await you.close();
    await reader.context().close();
  });

  test('a flood keeps the log at 1,000 entries also while the reader is scrolled up', { timeout: 90_000 }, async () => {
    const room = freshRoom('bounded');
    const page = await openPage(room, { nick: 'Scroller' });
    const flooder = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Flood`);
    await flooder.welcome();
    for (let i = 0; i < 40; i++) flooder.say(`before ${i}`);
    await see(messageText(page, 'before 39'));
    const log = page.locator('.ec-log');
    await log.evaluate((element) => (element.scrollTop = 0));

    const total = 1_100;
    for (let i = 0; i < total; i++) flooder.say(`flood ${i}`);
    await flooder.next({ type: 'message', text: `flood ${total - 1}` }, { timeoutMs: 30_000 });
    await see(messageText(page, `flood ${total - 1}`), 60_000);
    assert.ok((await page.locator('.ec-list > li').count()) <= 1_000, 'at most 1,000 entries');
    assert.equal(await messageText(page, 'before 0').count(), 0, 'the oldest went first');
    assert.ok(await log.evaluate((e) => e.scrollHeight - e.scrollTop - e.clientHeight > 48), 'still scrolled up');
    await see(page.locator('.ec-jump', { hasText: 'new messages' }));
    assertCalm(page);
    await flooder.close();
    await page.context().close();
  });
});

describe('the widget', () => {
  test('mounted on a page from another origin, it chats with the full page', { timeout: 60_000 }, async () => {
    const room = freshRoom('widget');
    const full = await openPage(room, { nick: 'FullPage' });

    const context = await browser.newContext({ viewport: { width: 900, height: 760 } });
    const partner = await context.newPage();
    watch(partner);
    await partner.goto(`${hostOrigin}/?${new URLSearchParams({ chat: server.url, room })}`);
    const widget = partner.locator('#widget');
    await widget.locator('.ec[data-status="online"]').waitFor({ timeout: WAIT_MS });
    assert.equal(await widget.locator('.ec-my-nick').textContent(), 'Widgeteer');

    await see(user(full, 'Widgeteer'));
    // A 420 px widget lists people behind a toggle.
    const people = widget.getByRole('button', { name: /^People/ });
    await people.click();
    await see(user(partner, 'FullPage'));
    await people.click();
    await say(full, 'hello from the full page');
    await see(messageText(partner, 'hello from the full page'));
    await say(partner, 'hello back from the widget');
    await see(messageText(full, 'hello back from the widget'));

    // Host styles stay out of the widget...
    const inside = await messageText(partner, 'hello back from the widget').evaluate((element) => {
      const style = getComputedStyle(element);
      return { color: style.color, display: style.display, font: style.fontFamily };
    });
    assert.notEqual(inside.color, 'rgb(255, 0, 0)');
    assert.notEqual(inside.display, 'none');
    assert.ok(!/^serif$/.test(inside.font), inside.font);
    // ...and the widget's styles stay out of the host page.
    const decoy = await partner.locator('#decoy').evaluate((element) => {
      const style = getComputedStyle(element);
      return { radius: style.borderTopLeftRadius, background: style.backgroundImage, padding: style.paddingLeft };
    });
    assert.deepEqual(decoy, { radius: '0px', background: 'none', padding: '0px' });
    assert.equal(await partner.locator('#host-text').evaluate((e) => getComputedStyle(e).color), 'rgb(255, 0, 0)');

    // Away and back: the widget catches up on more than a welcome holds by reading the rest
    // from the history route, which the Worker lets an allowed host origin read (CORS).
    const sockets = [];
    const pages = [];
    partner.on('websocket', (socket) => sockets.push(new URL(socket.url()).searchParams.get('after')));
    partner.on('response', (response) => {
      if (new URL(response.url()).pathname.endsWith('/history')) pages.push(response.status());
    });
    await context.setOffline(true);
    await widget.locator('.ec[data-status="waiting"]').waitFor({ timeout: WAIT_MS });
    const missed = await sendMany(room, 'away');
    await context.setOffline(false);
    await see(messageText(partner, missed.at(-1)), 30_000);
    await online(partner);
    await assertShownOnce(partner, ['hello from the full page', 'hello back from the widget', ...missed]);
    assert.ok(pages.length >= 1 && pages.every((status) => status === 200), `paged over HTTP: ${pages}`);
    const resumes = new Set(sockets.filter(Boolean));
    assert.equal(resumes.size, 1, `no reconnect with a later after was needed: ${[...resumes]}`);

    await screenshot(partner, 'widget-host');
    await screenshot(full, 'widget-full-page');
    assertCalm(partner);
    assertCalm(full);
    await context.close();
    await full.context().close();
  });

  test('hostile markup mounts nothing: only what the host names, at most 4', { timeout: 60_000 }, async () => {
    const room = freshRoom('hostile');
    const context = await browser.newContext();
    // Sockets are counted in the page, at the moment one is made.
    await context.addInitScript(() => {
      const Native = window.WebSocket;
      window.openedSockets = [];
      window.WebSocket = class extends Native {
        constructor(...args) {
          super(...args);
          window.openedSockets.push(String(args[0]));
        }
      };
    });
    const page = await context.newPage();
    watch(page);
    const sockets = [];
    page.on('websocket', (socket) => sockets.push(new URL(socket.url())));
    const users = async (name) => (await (await fetch(`${server.url}/chat/${name}/users`)).json()).users;

    await page.goto(`${hostOrigin}/?${new URLSearchParams({ chat: server.url, room, hostile: '' })}`);
    await page.locator('#widget .ec[data-status="online"]').waitFor({ timeout: WAIT_MS });
    await page.locator('body[data-comments-loaded="yes"]').waitFor({ state: 'attached', timeout: WAIT_MS });
    // A mount caused by the late comment would start within the task that inserted it (mutation
    // observers and an already loaded module run as microtasks): one more task lets it show.
    await page.evaluate(() => new Promise((done) => setTimeout(done, 0)));
    assert.equal(await page.locator('[data-edge-chat-nick="Admin"]').count(), 40, 'the attack is on the page');
    const hostileMounted = page.locator('[data-edge-chat-nick]').evaluateAll((all) => all.filter((e) => e.shadowRoot));
    assert.equal((await hostileMounted).length, 0);
    const opened = await page.evaluate(() => window.openedSockets.map((url) => url.slice(url.indexOf('/chat/'))));
    // Every socket names its tab's client instance (`client`), which is not the host's to choose.
    const paths = opened.map((path) => path.replace(/&client=[A-Za-z0-9_-]{1,64}$/, ''));
    assert.deepEqual(paths, [`/chat/${room}?nick=Widgeteer`], 'one socket, the host\'s');
    assert.deepEqual(await users(room), ['Widgeteer']);
    for (const label of ['before-0', 'after-0', 'later-0']) assert.deepEqual(await users(`${room}-${label}`), []);

    // The host's own code may mount more, up to four chats on the page in all.
    const outcomes = await page.evaluate(async (name) => {
      const hosts = ['One', 'Two', 'Three', 'Four'].map((nick) => {
        const element = document.createElement('div');
        element.id = `host-${nick}`;
        document.body.append(element);
        return EdgeChat.mount(element, { room: name, nick: `Host${nick}` });
      });
      return (await Promise.allSettled(hosts)).map((outcome) => outcome.reason?.message ?? outcome.status);
    }, room);
    assert.deepEqual(outcomes.slice(0, 3), ['fulfilled', 'fulfilled', 'fulfilled']);
    assert.match(outcomes[3], /at most 4 chats/);
    await waitFor(async () => (await users(room)).length === 4, { what: 'the three chats the host mounted' });
    assert.deepEqual(await users(room), ['HostOne', 'HostThree', 'HostTwo', 'Widgeteer']);
    // A chat whose element leaves the page disconnects.
    await page.evaluate(() => document.getElementById('host-Two').remove());
    await waitFor(async () => !(await users(room)).includes('HostTwo'), { what: 'HostTwo to leave' });
    assert.ok(sockets.every((url) => url.searchParams.get('nick') !== 'Admin'), 'no socket under the attacker\'s nick');
    assert.equal(sockets.length, 4);
    assertCalm(page);

    // The old snippet, without data-mount, mounts nothing and says what to do instead.
    const legacy = await context.newPage();
    const warned = legacy.waitForEvent('console', { predicate: (message) => /data-mount/.test(message.text()) });
    const legacyQuery = new URLSearchParams({ chat: server.url, room: `${room}-legacy`, legacy: '' });
    await legacy.goto(`${hostOrigin}/?${legacyQuery}`);
    assert.equal((await warned).type(), 'warning');
    assert.deepEqual(await legacy.evaluate(() => window.openedSockets), []);
    assert.equal(await legacy.locator('#widget').evaluate((element) => element.shadowRoot), null);
    await context.close();
  });
});

describe('identity and moderation', () => {
  test('a moderator deletes a message and kicks a member: the others see the tombstone and the notices, the kicked page says why and stays away', { timeout: 60_000 }, async () => {
    const room = freshRoom('moderate');
    const mod = await openPage(room, { ticket: ticket('mod-1', 'Mod', 'moderator') });
    const ann = await openPage(room, { ticket: ticket('ann-1', 'Ann') });
    const bob = await openPage(room, { nick: 'Bob', viewport: { width: 360, height: 720 } });
    await see(user(mod, 'Bob'));

    // Roles show, and only a moderator gets moderation controls; a ticket's nick is not changed here.
    assert.equal(await mod.locator('.ec-role').textContent(), 'moderator');
    assert.equal(await ann.locator('.ec-role').isVisible(), false);
    assert.equal(await ann.locator('.ec-my-nick').textContent(), 'Ann');
    assert.equal(await ann.getByRole('button', { name: 'Change nickname' }).isVisible(), false);

    await say(ann, 'regret this');
    await say(ann, 'keep this');
    await see(messageText(bob, 'keep this'));
    await see(messageText(mod, 'keep this'));
    assert.equal(await ann.locator('.ec-delete').first().isVisible(), false, 'members see no Delete');
    assert.equal(await ann.getByRole('button', { name: /^Moderate / }).count(), 0);

    await messageItem(mod, 'regret this').getByRole('button', { name: 'Delete message by Ann' }).click();
    for (const page of [bob, ann, mod]) {
      await see(systemLine(page, 'Mod deleted a message by Ann'));
      await see(page.locator('.ec-msg.ec-deleted .ec-tombstone', { hasText: exactly('message deleted') }));
      assert.equal(await messageText(page, 'regret this').count(), 0, 'the text is gone from the page');
      assert.equal(await messageText(page, 'keep this').count(), 1);
    }
    const tombstone = bob.locator('.ec-msg.ec-deleted');
    assert.equal(await tombstone.locator('.ec-author').textContent(), 'Ann');
    await screenshot(bob, 'moderation-tombstone-narrow');

    // Time on the kicked page runs only when the test says so, so that a retry the page would schedule
    // (the library backs off 0.25 s to 10 s) can be run at once rather than waited for.
    await ann.clock.install();
    const annSockets = ann.sockets.length;
    await mod.getByRole('button', { name: 'Moderate Ann' }).click();
    await screenshot(mod, 'moderation-controls');
    await mod.getByRole('button', { name: 'Kick Ann' }).click();

    const note = ann.locator('.ec-closed-note');
    await see(note.filter({ hasText: 'You were removed from this room by a moderator.' }));
    await see(ann.locator('.ec[data-status="closed"]'));
    await see(systemLine(bob, 'Mod removed Ann'));
    await see(systemLine(bob, 'Ann left'));
    await user(mod, 'Ann').waitFor({ state: 'detached', timeout: WAIT_MS });
    assert.equal(await ann.getByRole('button', { name: 'Retry now' }).isVisible(), false, 'no Retry offered');
    assert.equal(await ann.getByLabel(/^Message #/).isDisabled(), true);

    // Past the longest backoff: a page that meant to reconnect would have opened a socket by now.
    await ann.clock.runFor(15_000);
    // A later frame elsewhere, after Ann's page has had its chance: she is not back.
    await say(bob, 'after the kick');
    await see(messageText(mod, 'after the kick'));
    assert.equal(ann.sockets.length, annSockets, `no new socket after the kick: ${ann.sockets.slice(annSockets)}`);
    assert.deepEqual((await usersOf(room)).sort(), ['Bob', 'Mod']);
    assert.equal(await ann.locator('.ec[data-status="closed"]').count(), 1);
    await screenshot(ann, 'moderation-kicked');
    await screenshot(mod, 'moderation-moderator');
    for (const page of [mod, ann, bob]) {
      assertCalm(page);
      await page.context().close();
    }
  });

  test('the widget joins under the name of the ticket on its script tag, read-only here', { timeout: 60_000 }, async () => {
    const room = freshRoom(`${PRIVATE}widget`);
    assert.equal((await fetch(`${server.url}/chat/${room}/users`)).status, 401, 'a private room');
    // The host's script tag carries a read-only ticket: its name wins over data-nick.
    const context = await browser.newContext({ viewport: { width: 420, height: 640 } });
    const partner = await context.newPage();
    watch(partner);
    const query = new URLSearchParams({ chat: server.url, room, ticket: ticket('reader-1', 'Ticketed', 'readonly') });
    await partner.goto(`${hostOrigin}/?${query}`);
    const widget = partner.locator('#widget');
    await widget.locator('.ec[data-status="online"]').waitFor({ timeout: WAIT_MS });
    assert.equal(await widget.locator('.ec-my-nick').textContent(), 'Ticketed');
    assert.equal(await widget.locator('.ec-role').textContent(), 'read-only');
    assert.equal(await widget.getByLabel(/^Message #/).isDisabled(), true);
    await see(widget.locator('.ec-readonly-note', { hasText: 'read-only' }));
    const members = await fetch(`${server.url}/chat/${room}/users`, {
      headers: { authorization: `Bearer ${ticket('check-1', 'Checker')}` },
    });
    assert.deepEqual((await members.json()).users, ['Ticketed']);
    await screenshot(partner, 'widget-ticket-readonly');
    assertCalm(partner);
    await context.close();
  });

  // The refused upgrade answers the edge-chat.batch subprotocol the page offers; without it Chromium
  // would fail the handshake (1006), never see the 4401 and keep retrying.
  test('a page without a ticket is refused by a private room, says why and does not retry', { timeout: 60_000 }, async () => {
    const room = freshRoom(`${PRIVATE}refused`);
    const refused = await openPage(room, { nick: 'Nobody', wait: false });
    await refused.clock.install();
    await see(refused.locator('.ec-closed-note', { hasText: 'This room is private' }), 5_000);
    await see(refused.locator('.ec[data-status="closed"]'));
    await refused.clock.runFor(15_000);
    assert.equal(refused.sockets.length, 1, `one attempt only: ${refused.sockets}`);
    await refused.context().close();
  });
});
