// The widget loader. A host page on any origin allowed by ALLOWED_ORIGINS names the elements to
// mount in its own script tag:
//   <div id="chat" data-edge-chat-room="lobby" style="height: 480px"></div>
//   <script src="https://YOUR-WORKER/embed.js" data-mount="#chat" data-nick="Ann" async></script>
// (with `data-edge-chat-ticket="TICKET"` for a ticketed user), or mounts one from its own code with
// `EdgeChat.mount(element, { room, nick, ticket, getTicket })`. Each chat lives
// in a shadow root (styles stay apart both ways), connected back to the origin this script came
// from, and disconnects when its element leaves the page.
//
// Mounting is explicit and bounded because a host page may show user-generated markup, and HTML
// sanitisers keep data-* attributes: nothing is mounted just for carrying an attribute, at most
// MAX_CHATS chats run on a page, and a nick or a ticket comes only from the host's script tag or
// its own mount() call, never from an element's attributes.
//
// This is a classic script so that document.currentScript names where it came from; the chat
// itself is the ES module chat.js, the same one the full page uses.
(() => {
  const script = document.currentScript;
  if (!script?.src) {
    console.error('edge chat: load embed.js with <script src="…/embed.js">');
    return;
  }
  // Kept under a symbol, which markup cannot clobber (an element with id="EdgeChat" becomes
  // window.EdgeChat until a script assigns it), so that a second embed.js shares the bound.
  const API_KEY = Symbol.for('edge-chat.api');
  const api = (window[API_KEY] ??= createApi(new URL('chat.js', script.src).href));
  window.EdgeChat = api;
  const whenParsed = (run) => {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', run, { once: true });
    else run();
  };
  const selectors = script.dataset.mount;
  if (!selectors) {
    // The snippet documented before mounting became explicit: say what it needs now.
    whenParsed(() => {
      if (!document.querySelector('[data-edge-chat-room]')) return;
      console.warn('edge chat: nothing mounted. Name the elements in the script tag, as in '
        + '<script src="…/embed.js" data-mount="#chat">, or call EdgeChat.mount(element, options).');
    });
    return;
  }
  whenParsed(() => {
    let elements;
    try {
      elements = [...document.querySelectorAll(selectors)];
    } catch {
      console.error(`edge chat: data-mount=${JSON.stringify(selectors)} is not a CSS selector list`);
      return;
    }
    for (const element of elements) {
      api
        .mount(element, {
          room: element.dataset.edgeChatRoom || script.dataset.room,
          nick: script.dataset.nick,
          ticket: script.dataset.edgeChatTicket,
        })
        .catch((error) => console.error('edge chat: could not mount the chat', element, error));
    }
  });

  function createApi(chatUrl) {
    // A few chats are plenty for a page; the bound keeps a page from opening sockets without end.
    const MAX_CHATS = 4;
    const mounted = new Map();
    let chatModule;
    let observer;

    // A chat whose element left the page disconnects and frees its place.
    const forgetDetached = () => {
      for (const [element, chat] of mounted) {
        if (!element.isConnected) chat.then((handle) => handle.destroy(), () => {});
      }
    };

    /**
     * Mounts the chat of `options.room` (default lobby) into `element`, asking for `options.nick`,
     * as the holder of `options.ticket` (or of what `options.getTicket()` returns before every
     * connect). Resolves with { room, nick, switchRoom(name), destroy() }; mounting the same element
     * again resolves with the same chat.
     */
    function mount(element, { room, nick, ticket, getTicket } = {}) {
      if (!(element instanceof Element)) return Promise.reject(new TypeError('edge chat: mount() needs an element'));
      if (mounted.has(element)) return mounted.get(element);
      if (mounted.size >= MAX_CHATS) {
        return Promise.reject(new Error(`edge chat: at most ${MAX_CHATS} chats per page; this one was not mounted`));
      }
      chatModule ??= import(chatUrl);
      const chat = chatModule.then(({ mountChat }) => {
        const handle = mountChat(element, {
          room: room || undefined,
          nick: nick || undefined,
          ticket: ticket || undefined,
          getTicket: typeof getTicket === 'function' ? getTicket : undefined,
        });
        const destroy = () => {
          if (mounted.get(element) !== chat) return;
          mounted.delete(element);
          handle.destroy();
        };
        return Object.defineProperties({ switchRoom: handle.switchRoom, destroy }, {
          room: { get: () => handle.room, enumerable: true },
          nick: { get: () => handle.nick, enumerable: true },
        });
      });
      mounted.set(element, chat);
      chat.then(
        () => forgetDetached(),
        () => mounted.get(element) === chat && mounted.delete(element),
      );
      if (!observer) {
        observer = new MutationObserver(forgetDetached);
        observer.observe(document.documentElement, { childList: true, subtree: true });
      }
      return chat;
    }

    return Object.freeze({ mount, maxChats: MAX_CHATS });
  }
})();
