// Headless Chromium for the browser tests: the machine's own (scripts/toolchain.sh installs it),
// with nothing that would reach the network or the GPU on its own.

import { chromium } from 'playwright-core';

export function launchChromium() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/** How long a page step may take before its test fails. */
export const WAIT_MS = 15_000;

/** Waits until the page's chat is connected. */
export function online(page, timeout = WAIT_MS) {
  return page.locator('.ec[data-status="online"]').waitFor({ timeout });
}

/** Types `text` into the page's message box and sends it. */
export async function say(page, text) {
  const input = page.getByLabel(/^Message #/);
  await input.fill(text);
  await input.press('Enter');
}

/** A pattern that matches exactly `text`. */
export function exactly(text) {
  return new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
}

/** Records a page's dialogs (dismissing them) and its uncaught errors and console errors. */
export function watch(page) {
  page.dialogs = [];
  page.errors = [];
  page.on('dialog', (dialog) => {
    page.dialogs.push(dialog.message());
    dialog.dismiss().catch(() => {});
  });
  page.on('pageerror', (error) => page.errors.push(String(error)));
  page.on('console', (message) => {
    // Failed attempts while the server or the network is down are expected.
    if (message.type() === 'error' && !/^WebSocket connection to .* failed/.test(message.text())) {
      page.errors.push(message.text());
    }
  });
}
