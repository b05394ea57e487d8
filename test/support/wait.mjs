// The one waiting primitive of the test clients (WebSocket and event stream): a check run now and
// again on every frame or event the client receives, never a fixed sleep.

/**
 * Resolves with `find()`'s first truthy result. Fails on the client's first protocol violation,
 * once `ended()` names how the client ended, or after `timeoutMs`; `recent()` describes what the
 * client last received, for the error.
 */
export function waitFor(client, { find, what, timeoutMs, ended, recent }) {
  return new Promise((done, fail) => {
    const check = () => {
      if (client.violations.length) {
        finish();
        fail(new Error(client.violations[0]));
        return;
      }
      const found = find();
      const end = found ? null : ended();
      if (found) {
        finish();
        done(found);
      } else if (end) {
        finish();
        fail(new Error(`${end} before ${what}; ${recent()}`));
      }
    };
    const timer = setTimeout(() => {
      finish();
      fail(new Error(`no ${what} within ${timeoutMs} ms; ${recent()}`));
    }, timeoutMs);
    const finish = () => {
      clearTimeout(timer);
      client.waiters.delete(check);
    };
    client.waiters.add(check);
    check();
  });
}
