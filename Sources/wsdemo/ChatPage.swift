/// The chat page, on the library's browser client (`/_ws/socket.js`): the
/// room is the page's `?ch=` (default "lobby"), the name its `?user=` (default
/// a random guest name). Element ids are what Tests/Browser drives.
let chatPage = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>wsdemo chat</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  header { display: flex; align-items: baseline; gap: 1rem; flex-wrap: wrap; }
  header h1 { margin: 0; font-size: 1.5rem; } header nav { margin-left: auto; } header nav a { margin-left: .8rem; }
  #state { padding: .1rem .6rem; border-radius: 1rem; font-size: .85rem; background: #eee; color: #555; }
  #state[data-state=open] { background: #d8f5dc; color: #175c23; }
  #state[data-state=waiting], #state[data-state=connecting] { background: #fff1c9; color: #7a5a00; }
  #state[data-state=closed] { background: #f8d7d7; color: #8a1c1c; }
  main { display: grid; grid-template-columns: 1fr 12rem; gap: 1rem; margin-top: 1rem; }
  #log { border: 1px solid #ccc; height: 24rem; overflow-y: auto; padding: .5rem; background: #fafafa; border-radius: 4px; }
  aside { border: 1px solid #ccc; border-radius: 4px; padding: .5rem; } aside h2 { font-size: 1rem; margin: 0 0 .3rem; }
  #online { list-style: none; padding: 0; margin: 0; } #online li::before { content: "● "; color: #2a2; }
  .sys { color: #777; font-style: italic; } .err { color: #b00; } .mine b { color: #05a; } .admin { color: #7a3; }
  form { display: flex; gap: .5rem; margin-top: .5rem; } #text { flex: 1; }
</style>
</head>
<body>
<header>
  <h1>Chat <small id="room"></small></h1>
  <span>as <b id="me"></b></span>
  <span id="state" data-state="connecting">connecting…</span>
  <nav><a href="/admin/sockets">Admin: sockets</a><a href="/admin/sockets/tap">live tap</a></nav>
</header>
<main>
  <div id="log"></div>
  <aside><h2>Online</h2><ul id="online"></ul></aside>
</main>
<form id="form"><input id="text" placeholder="say something" autocomplete="off"><button id="send">Send</button></form>
<script src="/_ws/socket.js"></script>
<script>
"use strict";
const query = new URLSearchParams(location.search);
const room = query.get("ch") || "lobby";
const name = query.get("user") || "guest-" + Math.random().toString(16).slice(2, 6);
document.getElementById("room").textContent = "#" + room;
document.getElementById("me").textContent = name;
const log = document.getElementById("log");
const seen = new Set();          // message ids shown (history replays repeat them)
const online = new Map();        // user id -> open connections in the room
let me = null;

function line(html, cls, id) {
  const div = document.createElement("div");
  if (typeof html === "string") div.textContent = html; else div.append(...html);
  if (cls) div.className = cls;
  if (id) div.dataset.id = id;
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
}
function bold(text) { const b = document.createElement("b"); b.textContent = text; return b; }
function showSay(m) {
  const p = m.param || {};
  if (!p.id || seen.has(p.id)) return;
  seen.add(p.id);
  line([bold(p.name || "anonymous"), ": " + p.text], m.from === me ? "msg mine" : "msg", p.id);
}
function renderOnline() {
  const ul = document.getElementById("online");
  ul.replaceChildren(...[...online.keys()].sort().map((user) => {
    const li = document.createElement("li");
    const n = online.get(user);
    li.textContent = user + (n > 1 ? " ×" + n : "");
    return li;
  }));
}
const stateLabel = { connecting: "connecting…", open: "online", waiting: "offline", closed: "closed" };

const socket = new Socket(
  query.has("debug"),
  () => { socket.send({ channel: room, cmd: "hello" }); },
  (m) => {
    switch (m.cmd) {
      case "hello":
        me = m.param.id;
        online.clear();
        for (const user of m.param.online) online.set(user, (online.get(user) || 0) + 1);
        renderOnline();
        break;
      case "history": m.param.forEach(showSay); break;
      case "say": showSay(m); break;
      case "online-update": {
        const n = (online.get(m.param.userID) || 0) + (m.param.connected ? 1 : -1);
        if (n > 0) online.set(m.param.userID, n); else online.delete(m.param.userID);
        renderOnline();
        line(m.param.userID + (m.param.connected ? " joined" : " left"), "sys");
        break;
      }
      case "error": line("error: " + m.param.message, "err"); break;
      case "close-connection": line("the server closed this chat", "sys"); break;
      default: line("[" + m.cmd + "] " + JSON.stringify(m.param), "admin");
    }
  },
  (e) => { if (e.kind !== "transport") line("client error: " + e.message, "err"); },
  "/ws?ch=" + encodeURIComponent(room) + "&user=" + encodeURIComponent(name),
  {
    backoff: { initial: 250, max: 5000, factor: 2, jitter: 0.5 },
    onStateChange: (state, detail) => {
      const el = document.getElementById("state");
      el.dataset.state = state;
      el.textContent = stateLabel[state] + (state === "waiting" ? ", retrying in " + (detail.retryIn / 1000).toFixed(1) + " s" : "");
      if (state !== "open") { online.clear(); renderOnline(); }
    },
    // Back after a drop: what was said meanwhile follows (recovered), or the
    // server no longer has all of it and `hello`'s history is what we get.
    onRecovery: (channel, recovered) => {
      window.chat.recoveries.push([channel, recovered]);
      if (!recovered) line("some messages in #" + channel + " were missed while offline", "sys");
    },
  },
);
window.chat = { socket, recoveries: [] };
document.getElementById("form").onsubmit = (e) => {
  e.preventDefault();
  const text = document.getElementById("text");
  if (!text.value) return;
  const id = name + "-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 8);
  socket.send({ channel: room, cmd: "say", param: { id, name, text: text.value } });  // queued while offline
  text.value = "";
};
</script>
</body>
</html>
"""#
