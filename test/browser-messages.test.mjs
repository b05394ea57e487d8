// The browser client's message features in a real headless Chromium against the built Worker in
// workerd, one runtime for the file: editing and deleting own messages, reactions, replies, the
// typing line, and the outbox across dropped connections (sent exactly once, edits and reactions
// made while a page was away shown when it is back). Screenshots go under test-results/.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ChatClient } from './support/client.mjs';
import { storedMessages } from './support/protocol.mjs';
import { ChatServer, MANY_CLIENTS_ONE_ADDRESS, ROOT, waitFor } from './support/server.mjs';
import { exactly, launchChromium, online, say, WAIT_MS, watch } from './support/browser.mjs';

const RESULTS = join(ROOT, 'test-results');

let server;
let browser;
let roomCounter = 0;
const freshRoom = (label) => `${label}-${process.pid}-${++roomCounter}`;

before(async () => {
  mkdirSync(RESULTS, { recursive: true });
  server = new ChatServer({ vars: { ...MANY_CLIENTS_ONE_ADDRESS } });
  [browser] = await Promise.all([
    launchChromium(),
    server.start(),
  ]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/**
 * Opens the full page in its own browser context (its own storage, like another person) and waits
 * until it is connected. Its WebSockets go through a route the test controls, `page.link`: `pass`
 * forwards both ways; `swallow` forwards what the page sends but drops what the server sends
 * (an echo that never arrives); `down` refuses new sockets, as a dead network would. `cut()`
 * closes the page's current sockets on both sides and sets `down`.
 */
async function openPage(room, nick) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
  const link = { mode: 'pass', routes: [], urls: [] };
  await context.routeWebSocket(/\/chat\//, (ws) => {
    link.urls.push(new URL(ws.url()));
    if (link.mode === 'down') {
      ws.close({ code: 1011, reason: 'network down' });
      return;
    }
    const upstream = ws.connectToServer();
    upstream.onMessage((message) => link.mode === 'pass' && ws.send(message));
    link.routes.push({ ws, upstream });
  });
  link.cut = async () => {
    link.mode = 'down';
    for (const { ws, upstream } of link.routes.splice(0)) {
      await upstream.close();
      await ws.close({ code: 1011, reason: 'network down' });
    }
  };
  const page = await context.newPage();
  watch(page);
  page.link = link;
  await page.goto(`${server.url}/?${new URLSearchParams({ room, nick })}`);
  await online(page);
  return page;
}

/** A stored message's entry in the log (not the outbox), by its exact text. */
function entry(page, text) {
  return page.locator('.ec-list .ec-msg').filter({ has: page.locator('.ec-text').filter({ hasText: exactly(text) }) });
}

async function see(locator, timeout = WAIT_MS) {
  await locator.first().waitFor({ timeout });
}

/** The texts of the log's messages, in order. */
function shownTexts(page) {
  return page.locator('.ec-list .ec-msg .ec-text').allTextContents();
}

function screenshot(page, name) {
  return page.screenshot({ path: join(RESULTS, `messages-${name}.png`), animations: 'disabled' });
}

function assertCalm(page) {
  assert.deepEqual(page.errors, [], 'no errors in the page or its console');
}

async function rawClient(room, nick) {
  const client = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=${nick}&client=${nick}-raw`);
  await client.welcome();
  return client;
}

describe('messages in the browser client', () => {
  test('edit, delete, react, reply and the typing line, as each page sees them', { timeout: 90_000 }, async () => {
    const room = freshRoom('features');
    const ann = await openPage(room, 'Ann');
    const bob = await openPage(room, 'Bob');

    // Edit: only on own messages, and every page shows the new text with an "edited" marker.
    await say(ann, 'first draft');
    await see(entry(bob, 'first draft'));
    assert.equal(await entry(bob, 'first draft').getByRole('button', { name: 'Edit your message' }).count(), 0);
    assert.equal(await entry(bob, 'first draft').getByRole('button', { name: 'Delete your message' }).count(), 0);
    await entry(ann, 'first draft').getByRole('button', { name: 'Edit your message' }).click();
    const editor = ann.getByRole('textbox', { name: 'Edit your message' });
    assert.equal(await editor.inputValue(), 'first draft');
    await editor.fill('final text');
    await editor.press('Enter');
    for (const page of [ann, bob]) {
      await see(entry(page, 'final text').locator('.ec-edited', { hasText: '(edited)' }));
      assert.equal(await entry(page, 'first draft').count(), 0);
    }
    const [edited] = await storedMessages(server, room);
    assert.deepEqual([edited.text, typeof edited.edited_at], ['final text', 'number']);

    // Reply: a quoted preview; a click on it brings the original into view and focus.
    await entry(bob, 'final text').getByRole('button', { name: 'Reply to Ann' }).click();
    await see(bob.locator('.ec-reply-bar', { hasText: 'Replying to Ann: final text' }));
    await say(bob, 'a reply');
    await bob.locator('.ec-reply-bar').waitFor({ state: 'hidden' });
    const quote = entry(ann, 'a reply').getByRole('button', { name: 'In reply to Ann: final text. Show the original' });
    await see(quote);
    await ann.locator('.ec-log').evaluate((log) => (log.scrollTop = log.scrollHeight));
    await quote.click();
    const original = entry(ann, 'final text');
    await waitFor(() => original.evaluate((element) => element.getRootNode().activeElement === element), {
      what: 'the original to have the focus',
    });
    const reply = (await storedMessages(server, room)).find((message) => message.text === 'a reply');
    assert.equal(reply.reply_to, edited.id);

    // React: from the picker, then by the count's own button; both pages count.
    await entry(bob, 'final text').getByRole('button', { name: 'React to the message by Ann' }).click();
    await bob.getByRole('group', { name: 'Pick a reaction' }).getByRole('button', { name: 'React with thumbs up' }).click();
    for (const page of [ann, bob]) await see(entry(page, 'final text').locator('.ec-reaction', { hasText: '👍 1' }));
    await entry(ann, 'final text').locator('.ec-reaction', { hasText: '👍 1' }).click();
    for (const page of [ann, bob]) await see(entry(page, 'final text').locator('.ec-reaction', { hasText: '👍 2' }));
    assert.deepEqual((await storedMessages(server, room))[0].reactions, { '👍': 2 });

    // Typing: the page tells the others while its user types (at most every few seconds, so Bob
    // keeps typing until Ann's page shows it), and a message ends it.
    const bobInput = bob.getByLabel(/^Message #/);
    const typing = ann.locator('.ec-typing');
    let keystrokes = 0;
    await waitFor(async () => {
      await bobInput.fill(`thinking${'.'.repeat(++keystrokes)}`);
      return (await typing.textContent()) === 'Bob is typing…';
    }, { what: 'Ann\'s page to show Bob typing', everyMs: 200 });
    const thought = await bobInput.inputValue();
    await bobInput.press('Enter');
    await see(entry(ann, thought));
    await waitFor(async () => (await typing.textContent()) === '', { what: 'Bob\'s message to end his typing' });
    // One name, two names, then several; a message drops its author, and the rest expire on their own.
    const [cy, di, ed] = await Promise.all(['Cy', 'Di', 'Ed'].map((nick) => rawClient(room, nick)));
    cy.send({ type: 'typing' });
    await see(typing.filter({ hasText: exactly('Cy is typing…') }));
    di.send({ type: 'typing' });
    await see(typing.filter({ hasText: exactly('Cy and Di are typing…') }));
    ed.send({ type: 'typing' });
    await see(typing.filter({ hasText: exactly('Several people are typing…') }));
    await screenshot(ann, 'typing-reactions-reply');
    await cy.sayAndWait('done typing');
    await see(typing.filter({ hasText: exactly('Di and Ed are typing…') }));
    await waitFor(async () => (await typing.textContent()) === '', { what: 'the typing line to expire', timeoutMs: 10_000 });
    assert.equal(await bob.locator('.ec-typing').textContent(), '', 'nobody types on Bob\'s page but himself');

    // Delete: an own message becomes a tombstone everywhere; others' messages offer no such button.
    await say(ann, 'regret this');
    await see(entry(bob, 'regret this'));
    await entry(ann, 'regret this').getByRole('button', { name: 'Delete your message' }).click();
    for (const page of [ann, bob]) {
      await see(page.locator('.ec-msg.ec-deleted .ec-tombstone', { hasText: exactly('message deleted') }));
      assert.equal(await entry(page, 'regret this').count(), 0);
    }
    assert.ok((await storedMessages(server, room)).some((message) => message.deleted && !('text' in message)));
    assert.equal(await entry(ann, 'a reply').getByRole('button', { name: 'Delete your message' }).count(), 0);
    await screenshot(bob, 'edit-delete');

    await Promise.all([cy.close(), di.close(), ed.close()]);
    for (const page of [ann, bob]) {
      assertCalm(page);
      await page.context().close();
    }
  });

  test('a page that lost its connection sends two messages exactly once; another page sees the edit and the reaction made while it was away', { timeout: 90_000 }, async () => {
    const room = freshRoom('offline');
    const ann = await openPage(room, 'Ann');
    const bob = await openPage(room, 'Bob');
    const cy = await rawClient(room, 'Cy');
    const original = await cy.sayAndWait('original words');
    for (const page of [ann, bob]) await see(entry(page, 'original words'));

    // Ann's first message is stored, but its echo never reaches her page; then the network dies.
    ann.link.mode = 'swallow';
    await say(ann, 'stored, echo lost');
    await cy.next({ type: 'message', text: 'stored, echo lost' });
    await ann.link.cut();
    await see(ann.locator('.ec:not([data-status="online"])'));
    // The second one is written while the page is offline.
    await say(ann, 'written offline');
    const pending = ann.locator('.ec-outbox .ec-pending');
    await waitFor(async () => (await pending.count()) === 2, { what: 'two messages in the outbox' });
    assert.deepEqual(await pending.locator('.ec-text').allTextContents(), ['stored, echo lost', 'written offline']);
    assert.deepEqual(await pending.locator('.ec-sending').allTextContents(), ['sending…', 'sending…']);
    await screenshot(ann, 'sending');

    // Bob goes away too; meanwhile Cy edits and reacts.
    await bob.link.cut();
    await see(bob.locator('.ec:not([data-status="online"])'));
    cy.send({ type: 'edit', id: original.id, text: 'edited while you were away' });
    await cy.next({ type: 'edited', id: original.id });
    cy.send({ type: 'react', id: original.id, emoji: '🎉' });
    await cy.next({ type: 'reactions', id: original.id });

    ann.link.mode = 'pass';
    bob.link.mode = 'pass';
    await Promise.all([online(ann, 30_000), online(bob, 30_000)]);
    await see(entry(ann, 'written offline'), 30_000);
    await pending.first().waitFor({ state: 'detached', timeout: WAIT_MS });
    const expected = ['edited while you were away', 'stored, echo lost', 'written offline'];
    assert.deepEqual(await shownTexts(ann), expected, 'each message once, in order, on the page that sent them');
    const stored = (await storedMessages(server, room)).map((message) => message.text);
    assert.deepEqual(stored, expected, 'stored exactly once each');

    // Bob resumed by sequence number and shows the edit and the reaction.
    await see(entry(bob, 'written offline'), 30_000);
    const changed = entry(bob, 'edited while you were away');
    await see(changed.locator('.ec-edited'));
    await see(changed.locator('.ec-reaction', { hasText: '🎉 1' }));
    assert.deepEqual(await shownTexts(bob), expected);
    for (const page of [ann, bob]) {
      // One loss and one return, also when the return included a catch-up.
      await see(page.locator('.ec-system', { hasText: 'Reconnected.' }));
      assert.equal(await page.locator('.ec-system', { hasText: 'Connection lost' }).count(), 1);
      assert.equal(await page.locator('.ec-system', { hasText: 'Reconnected.' }).count(), 1);
      const resumed = page.link.urls.slice(1).filter((url) => url.searchParams.has('after'));
      assert.ok(resumed.length > 0, `reconnected with after=SEQ: ${page.link.urls.map((url) => url.search)}`);
      assert.ok(!resumed.some((url) => url.searchParams.has('since')), 'after instead of since');
      // One client id per tab, the same on every socket.
      assert.equal(new Set(page.link.urls.map((url) => url.searchParams.get('client'))).size, 1);
    }
    await screenshot(bob, 'resumed');

    await cy.close();
    for (const page of [ann, bob]) {
      assertCalm(page);
      await page.context().close();
    }
  });
});
