// The widget loader. A host page on any origin allowed by ALLOWED_ORIGINS adds
//   <div data-edge-chat-room="lobby" style="height: 480px"></div>
//   <script src="https://YOUR-WORKER/embed.js" async></script>
// and every element marked data-edge-chat-room gets the chat of that room, in a shadow root
// (styles stay apart both ways), connected back to the origin this script came from. An
// optional data-edge-chat-nick asks for a nickname. Elements added later are mounted too,
// and a chat whose element leaves the page disconnects.
//
// This is a classic script so that document.currentScript names where it came from; the chat
// itself is the ES module chat.js, the same one the full page uses.
(() => {
  const script = document.currentScript;
  if (!script?.src) {
    console.error('edge chat: load embed.js with <script src="…/embed.js">');
    return;
  }
  const chatModule = import(new URL('chat.js', script.src).href);
  const mounted = new Map();
  const SELECTOR = '[data-edge-chat-room]';

  async function mount(element) {
    if (mounted.has(element)) return;
    mounted.set(element, null);
    try {
      const { mountChat } = await chatModule;
      const chat = mountChat(element, {
        room: element.dataset.edgeChatRoom || undefined,
        nick: element.dataset.edgeChatNick || undefined,
      });
      if (mounted.has(element) && element.isConnected) mounted.set(element, chat);
      else chat.destroy();
    } catch (error) {
      console.error('edge chat: could not mount the chat', element, error);
    }
  }

  function sync() {
    for (const element of document.querySelectorAll(SELECTOR)) mount(element);
    for (const [element, chat] of mounted) {
      if (!element.isConnected) {
        chat?.destroy();
        mounted.delete(element);
      }
    }
  }

  const start = () => {
    sync();
    new MutationObserver(sync).observe(document.documentElement, { childList: true, subtree: true });
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start, { once: true });
  else start();
})();
